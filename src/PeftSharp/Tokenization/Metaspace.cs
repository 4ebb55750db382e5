namespace PeftSharp.Tokenization;

/// <summary>When Metaspace puts a "▁" before a piece of text that does not start with one.</summary>
internal enum PrependScheme { Always, First, Never }

/// <summary>
/// HF's <c>Metaspace</c> pre-tokenizer (SentencePiece's view of spaces): every ' ' becomes the replacement
/// ("▁"), a "▁" is prepended per <see cref="PrependScheme"/> (First: only to the piece at the very start of the
/// input, not after an added token), then, if <c>split</c>, the text is cut before every "▁".
/// </summary>
internal sealed class MetaspacePreTokenizer(char replacement, PrependScheme scheme, bool split) : IPreTokenizer
{
    readonly CodePointRegex space = new(" ", "Metaspace");
    readonly string replacementText = replacement.ToString();

    public void PreTokenize(List<Word> words)
    {
        for (int i = 0; i < words.Count; i++)
        {
            var w = words[i];
            var text = w.Source.Slice(w.Start, w.End).Replace(space, replacementText);
            var prepend = scheme == PrependScheme.Always || (scheme == PrependScheme.First && w.OriginalSpan(0, 0).Start == 0);
            if (prepend && !text.Text.StartsWith(replacement)) text = text.PrependToFirst(replacementText);
            words[i] = Word.Whole(text);
        }
        if (split)
        {
            Splitting.SplitAll(words, (text, matches) => Splitting.CodePointMatches(text, r => r.Value == replacement, matches),
                SplitBehavior.MergedWithNext);
        }
    }

    /// <summary>prepend_scheme, or the older add_prefix_space (true: always).</summary>
    public static PrependScheme ParseScheme(string? scheme, bool? addPrefixSpace, string source) => scheme switch
    {
        "always" => PrependScheme.Always,
        "first" => PrependScheme.First,
        "never" => PrependScheme.Never,
        null => addPrefixSpace == false ? PrependScheme.Never : PrependScheme.Always,
        _ => throw new NotSupportedException($"{source}: Metaspace prepend_scheme '{scheme}' is unknown (expected always, first or never)"),
    };
}

/// <summary>
/// HF's <c>Metaspace</c> decoder: "▁" back to ' ', except in the first token, where (unless the scheme is never)
/// every "▁" is dropped, not only the one Metaspace prepended: tokenizers decodes ["▁▁a▁", "▁b"] as "a b".
/// </summary>
internal sealed class MetaspaceDecoder(char replacement, PrependScheme scheme) : IDecoder
{
    public List<string> DecodeChain(List<string> tokens)
    {
        var result = new List<string>(tokens.Count);
        for (int i = 0; i < tokens.Count; i++)
        {
            result.Add(i == 0 && scheme != PrependScheme.Never
                ? tokens[i].Replace(replacement.ToString(), "", StringComparison.Ordinal)
                : tokens[i].Replace(replacement, ' '));
        }
        return result;
    }
}
