using System.Globalization;
using System.Text;

namespace PeftSharp.Tokenization;

/// <summary>HF's <c>Prepend</c>: puts a string (Llama 2: "▁") before any non-empty text.</summary>
internal sealed class PrependNormalizer(string prepend) : INormalizer
{
    public NormalizedText Normalize(NormalizedText text) => text.PrependToFirst(prepend);
}

/// <summary>HF's <c>Replace</c>: every match of a literal string or a regex becomes <c>content</c> (Llama 2: " " to "▁").</summary>
internal sealed class ReplaceNormalizer(CodePointRegex pattern, string content) : INormalizer
{
    public NormalizedText Normalize(NormalizedText text) => text.Replace(pattern, content);
}

/// <summary>HF's <c>Strip</c>: drops leading and/or trailing whitespace.</summary>
internal sealed class StripNormalizer(bool left, bool right) : INormalizer
{
    public NormalizedText Normalize(NormalizedText text)
    {
        int start = 0, end = text.Length;
        if (left) while (start < end && char.IsWhiteSpace(text.Text[start])) start++;
        if (right) while (end > start && char.IsWhiteSpace(text.Text[end - 1])) end--;
        return start == 0 && end == text.Length ? text : text.Slice(start, end);
    }
}

/// <summary>HF's <c>StripAccents</c>: removes combining marks (ALBERT runs it after NFKD, so "é" becomes "e").</summary>
internal sealed class StripAccentsNormalizer : INormalizer
{
    public NormalizedText Normalize(NormalizedText text) => text.Transform(ByteLevel.NextCodePoint, unit =>
    {
        Rune.DecodeFromUtf16(unit, out var r, out _);
        return Rune.GetUnicodeCategory(r) is UnicodeCategory.NonSpacingMark or UnicodeCategory.SpacingCombiningMark
            or UnicodeCategory.EnclosingMark ? "" : unit;
    });
}
