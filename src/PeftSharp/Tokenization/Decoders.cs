namespace PeftSharp.Tokenization;

/// <summary>Turns token strings back into text (HF's <c>decoder</c>: each step maps a list of strings to a list).</summary>
internal interface IDecoder
{
    List<string> DecodeChain(List<string> tokens);
}

internal sealed class ByteLevelDecoder : IDecoder
{
    public List<string> DecodeChain(List<string> tokens) => [ByteLevel.Decode(tokens)];
}

/// <summary>WordPiece: "##" pieces glue to the previous token, others get a space; optional punctuation cleanup.</summary>
internal sealed class WordPieceDecoder(string prefix, bool cleanup) : IDecoder
{
    public List<string> DecodeChain(List<string> tokens)
    {
        var result = new List<string>(tokens.Count);
        for (int i = 0; i < tokens.Count; i++)
        {
            var token = tokens[i];
            if (i > 0) token = token.StartsWith(prefix, StringComparison.Ordinal) ? token[prefix.Length..] : " " + token;
            result.Add(cleanup ? CleanUp(token, doNot: true) : token);
        }
        return result;
    }

    /// <summary>
    /// Removes the spaces WordPiece puts before punctuation and contractions. The tokenizers decoder also turns
    /// " do not" into " don't"; transformers' <c>clean_up_tokenization</c> does not.
    /// </summary>
    public static string CleanUp(string text, bool doNot)
    {
        text = text.Replace(" .", ".").Replace(" ?", "?").Replace(" !", "!").Replace(" ,", ",").Replace(" ' ", "'")
            .Replace(" n't", "n't").Replace(" 'm", "'m");
        if (doNot) text = text.Replace(" do not", " don't");
        return text.Replace(" 's", "'s").Replace(" 've", "'ve").Replace(" 're", "'re");
    }
}

internal sealed class SequenceDecoder(IReadOnlyList<IDecoder> steps) : IDecoder
{
    public List<string> DecodeChain(List<string> tokens)
    {
        foreach (var step in steps) tokens = step.DecodeChain(tokens);
        return tokens;
    }
}
