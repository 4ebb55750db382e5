using System.Buffers.Binary;
using System.Globalization;
using System.Text;

namespace PeftSharp.Tokenization;

/// <summary>
/// HF's <c>Precompiled</c> normalizer: SentencePiece's compiled rules (T5, ALBERT, XLM-R, mT5 files; nmt_nfkc is
/// NFKC plus whitespace and control-char cleanup). The charsmap is a 4-byte little-endian trie size, a darts-clone
/// double-array trie over UTF-8 keys, then NUL-terminated replacement strings the trie's values point into.
/// <para>
/// HF's walk, kept as is: each grapheme shorter than 6 UTF-8 bytes is looked up whole and, if the trie has any
/// prefix of it, replaced by the replacement of its <em>shortest</em> matching prefix; otherwise each code point
/// is looked up alone. Alignment is HF's too: replaced chars point at the chars they replace, one by one; extra
/// chars share the previous one's span; a shorter replacement makes its last char absorb the removed ones.
/// </para>
/// </summary>
internal sealed class PrecompiledNormalizer : INormalizer
{
    readonly uint[] trie;
    readonly byte[] replacements;
    readonly Dictionary<int, string> decoded = [];

    public PrecompiledNormalizer(byte[] charsmap, string source)
    {
        if (charsmap.Length < 4 || BinaryPrimitives.ReadUInt32LittleEndian(charsmap) is var size && size % 4 != 0 || size > charsmap.Length - 4)
            throw new InvalidDataException($"{source}: normalizer Precompiled: precompiled_charsmap is not a SentencePiece charsmap (bad trie size)");
        trie = new uint[size / 4];
        for (int i = 0; i < trie.Length; i++) trie[i] = BinaryPrimitives.ReadUInt32LittleEndian(charsmap.AsSpan(4 + 4 * i));
        if (trie.Length == 0)
            throw new InvalidDataException($"{source}: normalizer Precompiled: precompiled_charsmap has an empty trie");
        replacements = charsmap[(4 + (int)size)..];
    }

    public NormalizedText Normalize(NormalizedText text)
    {
        var s = text.Text;
        var output = new List<(string Chars, int Change)>(s.Length); // HF's (char, change) list, a code point per entry
        var modified = false;
        Span<byte> utf8 = stackalloc byte[16];
        for (int i = 0; i < s.Length;)
        {
            var length = StringInfo.GetNextTextElementLength(s.AsSpan(i));
            var grapheme = s.AsSpan(i, length);
            if (Encoding.UTF8.GetByteCount(grapheme) is var bytes && bytes < 6)
            {
                Encoding.UTF8.GetBytes(grapheme, utf8);
                if (Lookup(utf8[..bytes]) is { } whole)
                {
                    Replace(output, CodePoints(grapheme), whole);
                    modified = true;
                    i += length;
                    continue;
                }
            }
            for (int k = 0; k < length;)
            {
                var next = ByteLevel.NextCodePoint(s, i + k) - i;
                var part = grapheme[k..next];
                var lone = part.Length == 1 && char.IsSurrogate(part[0]); // not in any UTF-8 key
                if (!lone && Lookup(utf8[..Encoding.UTF8.GetBytes(part, utf8)]) is { } replacement)
                {
                    Replace(output, 1, replacement);
                    modified = true;
                }
                else output.Add((part.ToString(), 0));
                k = next;
            }
            i += length;
        }
        return modified ? Apply(text, output) : text;
    }

    /// <summary>HF's <c>replace</c>: the new chars, the surplus marked as insertions or the shortfall put on the last char.</summary>
    static void Replace(List<(string Chars, int Change)> output, int oldCount, string replacement)
    {
        var first = output.Count;
        for (int i = 0; i < replacement.Length; i = ByteLevel.NextCodePoint(replacement, i))
            output.Add((replacement[i..ByteLevel.NextCodePoint(replacement, i)], 0));
        var diff = output.Count - first - oldCount;
        if (diff > 0)
        {
            for (int k = output.Count - diff; k < output.Count; k++) output[k] = (output[k].Chars, 1);
        }
        else if (diff < 0 && output.Count > 0)
        {
            output[^1] = (output[^1].Chars, output[^1].Change + diff);
        }
    }

    /// <summary>HF's <c>NormalizedString::transform</c>, code point by code point.</summary>
    static NormalizedText Apply(NormalizedText text, List<(string Chars, int Change)> output)
    {
        var s = text.Text;
        var spans = new List<TokenSpan>(s.Length); // original span of each source code point
        for (int i = 0; i < s.Length; i = ByteLevel.NextCodePoint(s, i)) spans.Add(text.OriginalSpan(i, ByteLevel.NextCodePoint(s, i)));
        var builder = new NormalizedText.Builder(s.Length);
        var source = 0; // next source code point to consume
        foreach (var (chars, change) in output)
        {
            TokenSpan span;
            if (change > 0) span = source > 0 ? spans[Math.Min(source, spans.Count) - 1] : text.OriginalSpan(0, 0); // an insertion
            else
            {
                span = source < spans.Count ? spans[source] : spans[^1];
                source += 1 - change;
            }
            foreach (var c in chars) builder.Append(c, span.Start, span.End);
        }
        return builder.Build();
    }

    static int CodePoints(ReadOnlySpan<char> text)
    {
        var n = 0;
        for (int i = 0; i < text.Length; i++) if (!(char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))) n++;
        return n;
    }

    /// <summary>The replacement of the shortest key in the trie that is a prefix of <paramref name="key"/>, if any.</summary>
    string? Lookup(ReadOnlySpan<byte> key)
    {
        uint position = 0;
        var unit = trie[0];
        position ^= Offset(unit);
        foreach (var b in key)
        {
            if (b == 0) break;
            position ^= b;
            if (position >= trie.Length) return null;
            unit = trie[position];
            if ((unit & ((1u << 31) | 0xFF)) != b) return null; // label
            position ^= Offset(unit);
            if (((unit >> 8) & 1) == 1 && position < trie.Length) return Replacement((int)(trie[position] & ((1u << 31) - 1)));
        }
        return null;
    }

    static uint Offset(uint unit) => (unit >> 10) << (int)((unit & (1u << 9)) >> 6);

    string Replacement(int index)
    {
        lock (decoded)
        {
            if (decoded.TryGetValue(index, out var s)) return s;
            var end = Array.IndexOf(replacements, (byte)0, index);
            s = Encoding.UTF8.GetString(replacements, index, (end < 0 ? replacements.Length : end) - index);
            decoded[index] = s;
            return s;
        }
    }
}
