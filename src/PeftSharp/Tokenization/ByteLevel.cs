using System.Text;

namespace PeftSharp.Tokenization;

/// <summary>
/// GPT-2's reversible byte-to-char table: every UTF-8 byte gets a printable char (space is 'Ġ', newline 'Ċ'),
/// so byte-level BPE vocabularies are plain strings. Printable Latin-1 bytes map to themselves, the other
/// 68 bytes to U+0100 onwards, in byte order (<c>bytes_to_unicode</c> in GPT-2's encoder.py).
/// </summary>
internal static class ByteLevel
{
    public static readonly char[] ByteToChar = BuildTable();
    static readonly Dictionary<char, byte> charToByte = Enumerable.Range(0, 256).ToDictionary(b => ByteToChar[b], b => (byte)b);

    /// <summary>GPT-2's pre-tokenizer regex (used by the ByteLevel pre-tokenizer when use_regex is true).</summary>
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

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

    /// <summary>Replaces each char by the byte-level chars of its UTF-8 bytes, keeping the alignment.</summary>
    public static NormalizedText ToByteChars(NormalizedText piece)
    {
        var text = piece.Text;
        var ascii = true;
        foreach (var c in text) ascii &= c < 0x80;
        if (ascii)
        {
            // One byte per char: a char-for-char rewrite, no new alignment arrays.
            return piece.WithText(string.Create(text.Length, text, (dst, src) =>
            {
                for (int i = 0; i < src.Length; i++) dst[i] = ByteToChar[src[i]];
            }));
        }
        var bytes = new byte[4];
        return piece.Transform(NextCodePoint, unit =>
        {
            var n = Encoding.UTF8.GetBytes(unit, bytes);
            var chars = new char[n];
            for (int i = 0; i < n; i++) chars[i] = ByteToChar[bytes[i]];
            return new string(chars);
        });
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
