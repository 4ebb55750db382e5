using System.Globalization;
using System.Text;

namespace PeftSharp.Tokenization;

/// <summary>Rewrites text before pre-tokenization (HF's <c>normalizer</c>), keeping the alignment.</summary>
internal interface INormalizer
{
    NormalizedText Normalize(NormalizedText text);
}

/// <summary>
/// BERT's normalizer: drop control chars and map whitespace to ' ', pad CJK ideographs with spaces,
/// strip accents (NFD then drop non-spacing marks), lowercase. Applied code point by code point, which is
/// what HF's steps amount to.
/// </summary>
internal sealed class BertNormalizer(bool cleanText, bool handleChineseChars, bool stripAccents, bool lowercase) : INormalizer
{
    public NormalizedText Normalize(NormalizedText text) => text.Transform(ByteLevel.NextCodePoint, unit =>
    {
        Rune.DecodeFromUtf16(unit, out var r, out _); // a lone surrogate reads as U+FFFD, as its UTF-8 would
        if (cleanText)
        {
            if (r.Value is 0 or 0xFFFD || IsControl(r)) return "";
            if (r.Value is '\t' or '\n' or '\r' || Rune.IsWhiteSpace(r)) return " ";
        }
        if (handleChineseChars && IsChineseChar(r.Value)) return " " + (lowercase ? Lowercase.Map(unit) : unit) + " ";
        var s = unit;
        if (stripAccents && !(unit.Length == 1 && char.IsSurrogate(unit[0]))) // a lone surrogate cannot be normalized
        {
            var decomposed = unit.Normalize(NormalizationForm.FormD);
            var kept = new StringBuilder(decomposed.Length);
            foreach (var c in decomposed)
            {
                if (CharUnicodeInfo.GetUnicodeCategory(c) != UnicodeCategory.NonSpacingMark) kept.Append(c);
            }
            s = kept.ToString();
        }
        return lowercase ? Lowercase.Map(s) : s;
    });

    static bool IsControl(Rune r) => r.Value is not ('\t' or '\n' or '\r') && Rune.GetUnicodeCategory(r) is
        UnicodeCategory.Control or UnicodeCategory.Format or UnicodeCategory.PrivateUse
        or UnicodeCategory.OtherNotAssigned or UnicodeCategory.Surrogate;

    /// <summary>The CJK Unified Ideographs blocks, exactly as BERT defines "Chinese character".</summary>
    static bool IsChineseChar(int c) => c is (>= 0x4E00 and <= 0x9FFF) or (>= 0x3400 and <= 0x4DBF)
        or (>= 0x20000 and <= 0x2A6DF) or (>= 0x2A700 and <= 0x2B73F) or (>= 0x2B740 and <= 0x2B81F)
        or (>= 0x2B920 and <= 0x2CEAF) or (>= 0xF900 and <= 0xFAFF) or (>= 0x2F800 and <= 0x2FA1F);
}

/// <summary>Unicode lowercase, char by char as Rust's <c>char::to_lowercase</c> does (no final-sigma rule).</summary>
internal sealed class Lowercase : INormalizer
{
    public NormalizedText Normalize(NormalizedText text) => text.Transform(ByteLevel.NextCodePoint, Map);

    public static string Map(string s)
    {
        // U+0130 is the one code point whose full lowercase mapping (Rust) differs from .NET's simple one.
        if (s.Contains('\u0130', StringComparison.Ordinal)) s = s.Replace("\u0130", "i\u0307", StringComparison.Ordinal);
        if (s.Length == 1) return char.ToLowerInvariant(s[0]).ToString();
        var sb = new StringBuilder(s.Length);
        foreach (var r in s.EnumerateRunes()) sb.Append(Rune.ToLowerInvariant(r).ToString());
        return sb.ToString();
    }
}

/// <summary>
/// NFC / NFD / NFKC / NFKD, applied to each base char together with the marks that follow it. Alignment is HF's:
/// the chars a code point decomposes into point at it, and a composed char points at its first component only
/// (so "e\u0301" composed to "é" covers the "e").
/// </summary>
internal sealed class UnicodeNormalizer(NormalizationForm form) : INormalizer
{
    readonly NormalizationForm decomposition = form is NormalizationForm.FormKC or NormalizationForm.FormKD
        ? NormalizationForm.FormKD : NormalizationForm.FormD;

    public NormalizedText Normalize(NormalizedText text)
    {
        if (IsNormalized(text.Text, form)) return text;
        var s = text.Text;
        var builder = new NormalizedText.Builder(s.Length);
        for (int i = 0; i < s.Length;)
        {
            var end = NextCluster(s, i);
            var unit = s[i..end];
            var normalized = Normalize(unit, form);
            if (string.Equals(unit, normalized, StringComparison.Ordinal))
            {
                for (int k = i; k < end; k++) builder.Append(s[k], text.OriginalStart(k), text.OriginalEnd(k));
            }
            else
            {
                Align(text, i, end, normalized, builder);
            }
            i = end;
        }
        return builder.Build();
    }

    /// <summary>Appends <paramref name="normalized"/> (the form of chars [start, end)) with each char pointing at its source code point.</summary>
    void Align(NormalizedText text, int start, int end, string normalized, NormalizedText.Builder builder)
    {
        // The decomposed chars of the unit, each with the source code point it came from.
        var sources = new List<(int Start, int End)>();
        for (int i = start; i < end;)
        {
            var next = ByteLevel.NextCodePoint(text.Text, i);
            var span = text.OriginalSpan(i, next);
            foreach (var _ in Normalize(text.Text[i..next], decomposition)) sources.Add((span.Start, span.End));
            i = next;
        }
        var whole = text.OriginalSpan(start, end);
        var at = 0; // position in the decomposed chars
        for (int i = 0; i < normalized.Length;)
        {
            var next = ByteLevel.NextCodePoint(normalized, i);
            var (from, to) = at < sources.Count ? sources[at] : (whole.Start, whole.End);
            for (int k = i; k < next; k++) builder.Append(normalized[k], from, to);
            at += Normalize(normalized[i..next], decomposition).Length;
            i = next;
        }
    }

    static string Normalize(string unit, NormalizationForm form)
    {
        try { return unit.Normalize(form); }
        catch (ArgumentException) { return unit; } // a lone surrogate: HF strings cannot hold one
    }

    static bool IsNormalized(string text, NormalizationForm form)
    {
        try { return text.IsNormalized(form); }
        catch (ArgumentException) { return false; } // lone surrogates: normalize cluster by cluster below
    }

    /// <summary>A code point plus following combining marks and Hangul vowel/final jamo (what composition joins).</summary>
    int NextCluster(string text, int i)
    {
        var end = ByteLevel.NextCodePoint(text, i);
        while (end < text.Length)
        {
            var next = ByteLevel.NextCodePoint(text, end);
            if (!Joins(text[end..next])) break;
            end = next;
        }
        return end;
    }

    /// <summary>
    /// Whether a code point can compose with what precedes it: a mark or Hangul vowel/final jamo, also after
    /// compatibility decomposition (half-width ﾞ is a modifier letter whose NFKD is the combining U+3099).
    /// </summary>
    bool Joins(string codePoint)
    {
        var first = codePoint.Length == 2 ? codePoint : Normalize(codePoint, decomposition);
        Rune.DecodeFromUtf16(first, out var r, out _);
        return r.Value is (>= 0x1161 and <= 0x1175) or (>= 0x11A8 and <= 0x11C2)
            || Rune.GetUnicodeCategory(r) is UnicodeCategory.NonSpacingMark or UnicodeCategory.SpacingCombiningMark
                or UnicodeCategory.EnclosingMark;
    }
}

internal sealed class SequenceNormalizer(IReadOnlyList<INormalizer> steps) : INormalizer
{
    public NormalizedText Normalize(NormalizedText text)
    {
        foreach (var step in steps) text = step.Normalize(text);
        return text;
    }
}
