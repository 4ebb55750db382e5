using System.Globalization;
using System.Text;

namespace PeftSharp.Tokenization;

/// <summary>HF's <c>Replace</c> decoder: in each token, every match of the pattern becomes <c>content</c> ("▁" to " ").</summary>
internal sealed class ReplaceDecoder(CodePointRegex pattern, string content) : IDecoder
{
    public List<string> DecodeChain(List<string> tokens) =>
        [.. tokens.Select(t => NormalizedText.Verbatim(t).Replace(pattern, content).Text)];
}

/// <summary>
/// HF's <c>ByteFallback</c> decoder: runs of &lt;0xXX&gt; tokens become the text of their bytes, or one U+FFFD
/// per byte when the run is not valid UTF-8.
/// </summary>
internal sealed class ByteFallbackDecoder : IDecoder
{
    static readonly UTF8Encoding strictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    public List<string> DecodeChain(List<string> tokens)
    {
        var result = new List<string>(tokens.Count);
        var bytes = new List<byte>();
        foreach (var token in tokens)
        {
            if (ByteOf(token) is byte b)
            {
                bytes.Add(b);
                continue;
            }
            Flush();
            result.Add(token);
        }
        Flush();
        return result;

        void Flush()
        {
            if (bytes.Count == 0) return;
            try { result.Add(strictUtf8.GetString(bytes.ToArray())); }
            catch (DecoderFallbackException) { result.AddRange(Enumerable.Repeat("\uFFFD", bytes.Count)); }
            bytes.Clear();
        }
    }

    static byte? ByteOf(string token) =>
        token.Length == 6 && token.StartsWith("<0x", StringComparison.Ordinal) && token[5] == '>'
        && byte.TryParse(token.AsSpan(3, 2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out var b) ? b : null;
}

/// <summary>HF's <c>Fuse</c>: all tokens become one string.</summary>
internal sealed class FuseDecoder : IDecoder
{
    public List<string> DecodeChain(List<string> tokens) => [string.Concat(tokens)];
}

/// <summary>HF's <c>Strip</c> decoder: removes up to <c>start</c> leading and <c>stop</c> trailing <c>content</c> chars of each token.</summary>
internal sealed class StripDecoder(char content, int start, int stop) : IDecoder
{
    public List<string> DecodeChain(List<string> tokens) => [.. tokens.Select(Strip)];

    string Strip(string token)
    {
        int from = 0, to = token.Length;
        while (from < Math.Min(start, token.Length) && token[from] == content) from++;
        while (token.Length - to < stop && to > from && token[to - 1] == content) to--;
        return token[from..to];
    }
}
