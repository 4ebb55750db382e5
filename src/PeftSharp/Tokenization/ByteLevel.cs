using System.Text;
using System.Text.RegularExpressions;

namespace PeftSharp.Tokenization;

/// <summary>
/// GPT-2's reversible byte-to-char table: every UTF-8 byte gets a printable char (space is 'Ġ', newline 'Ċ'),
/// so byte-level BPE vocabularies are plain strings. Printable Latin-1 bytes map to themselves, the other
/// 68 bytes to U+0100 onwards, in byte order (<c>bytes_to_unicode</c> in GPT-2's encoder.py).
/// </summary>
internal static partial class ByteLevel
{
    public static readonly char[] ByteToChar = BuildTable();
    static readonly Dictionary<char, byte> charToByte = Enumerable.Range(0, 256).ToDictionary(b => ByteToChar[b], b => (byte)b);

    /// <summary>GPT-2's pre-tokenizer regex (used by the ByteLevel pre-tokenizer when use_regex is true).</summary>
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    // Source-generated: no regex compilation at run time, and faster matching than RegexOptions.Compiled.
    [GeneratedRegex(Gpt2Pattern, RegexOptions.CultureInvariant)]
    public static partial Regex Gpt2Regex();

    static char[] BuildTable()
    {
        var table = new char[256];
        var next = 256;
        for (int b = 0; b < 256; b++)
        {
            var printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            table[b] = printable ? (char)b : (char)next++;
        }
        return table;
    }

    /// <summary>
    /// Replaces each char of every word by the byte-level chars of its UTF-8 bytes, keeping the alignment.
    /// Words sharing a source are mapped with it in one pass, and re-pointed into the mapped text.
    /// </summary>
    public static void ToByteChars(List<Word> words)
    {
        NormalizedText? source = null, mapped = null;
        int[]? mappedIndex = null; // char index in source -> char index in mapped (null: the same)
        for (int i = 0; i < words.Count; i++)
        {
            var w = words[i];
            if (!ReferenceEquals(w.Source, source))
            {
                source = w.Source;
                (mapped, mappedIndex) = Map(source);
            }
            words[i] = mappedIndex == null ? w with { Source = mapped! } : new Word(mapped!, mappedIndex[w.Start], mappedIndex[w.End]);
        }
    }

    static (NormalizedText, int[]?) Map(NormalizedText source)
    {
        var text = source.Text;
        if (!text.AsSpan().ContainsAnyInRange('\u0080', '\uFFFF'))
        {
            // ASCII: one byte per char, so a char-for-char rewrite and no index translation.
            return (source.WithText(string.Create(text.Length, text, (dst, src) =>
            {
                for (int i = 0; i < src.Length; i++) dst[i] = ByteToChar[src[i]];
            })), null);
        }
        var builder = new NormalizedText.Builder(text.Length * 2);
        var index = new int[text.Length + 1];
        Span<byte> bytes = stackalloc byte[4];
        for (int i = 0; i < text.Length;)
        {
            var end = NextCodePoint(text, i);
            var n = Encoding.UTF8.GetBytes(text.AsSpan(i, end - i), bytes);
            for (int k = i; k < end; k++) index[k] = builder.Length;
            for (int k = 0; k < n; k++) builder.Append(ByteToChar[bytes[k]], source.OriginalStart(i), source.OriginalEnd(end - 1));
            i = end;
        }
        index[text.Length] = builder.Length;
        return (builder.Build(), index);
    }

    /// <summary>End of the code point starting at <paramref name="i"/> (a surrogate pair is one unit).</summary>
    public static int NextCodePoint(string text, int i) =>
        char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]) ? i + 2 : i + 1;

    /// <summary>
    /// HF's ByteLevel decoder: a token whose chars are all byte-level chars becomes those bytes, any other
    /// token (e.g. an added token with a space) its own UTF-8; invalid UTF-8 decodes to U+FFFD.
    /// </summary>
    public static string Decode(IEnumerable<string> tokens)
    {
        var bytes = new List<byte>();
        foreach (var token in tokens)
        {
            var start = bytes.Count;
            var allMapped = true;
            foreach (var c in token)
            {
                if (!charToByte.TryGetValue(c, out var b)) { allMapped = false; break; }
                bytes.Add(b);
            }
            if (!allMapped)
            {
                bytes.RemoveRange(start, bytes.Count - start);
                bytes.AddRange(Encoding.UTF8.GetBytes(token));
            }
        }
        return Encoding.UTF8.GetString(bytes.ToArray());
    }
}
