using System.Text;

namespace PeftSharp.Tokenization;

/// <summary>Splits normalized text into the words the model tokenizes one by one (HF's <c>pre_tokenizer</c>).</summary>
internal interface IPreTokenizer
{
    /// <summary>Replaces <paramref name="words"/> by the words they split into, in order.</summary>
    void PreTokenize(List<Word> words);
}

/// <summary>
/// GPT-2's pre-tokenizer: optionally a leading space, the GPT-2 regex, then every byte becomes a byte-level char.
/// add_prefix_space applies to every piece it is given (so also after each added token), as in HF.
/// </summary>
internal sealed class ByteLevelPreTokenizer(bool addPrefixSpace, bool useRegex) : IPreTokenizer
{
    static readonly CodePointRegex gpt2 = new(ByteLevel.Gpt2Regex());

    public void PreTokenize(List<Word> words)
    {
        if (addPrefixSpace)
        {
            for (int i = 0; i < words.Count; i++)
            {
                var w = words[i];
                if (!w.Text.StartsWith(' ')) words[i] = Word.Whole(w.Source.Slice(w.Start, w.End).Prepend(" "));
            }
        }
        if (useRegex) Splitting.SplitAll(words, (text, matches) => gpt2.Matches(text, invert: false, matches), SplitBehavior.Isolated);
        ByteLevel.ToByteChars(words);
    }
}

/// <summary>HF's <c>Split</c>: a regex or a literal string, a behavior, and optionally inverted matches.</summary>
internal sealed class SplitPreTokenizer(CodePointRegex pattern, SplitBehavior behavior, bool invert) : IPreTokenizer
{
    public void PreTokenize(List<Word> words) =>
        Splitting.SplitAll(words, (text, matches) => pattern.Matches(text, invert, matches), behavior);
}

/// <summary>HF's <c>Digits</c>: ASCII digits isolated one by one, or as runs.</summary>
internal sealed class DigitsPreTokenizer(bool individualDigits) : IPreTokenizer
{
    public void PreTokenize(List<Word> words) => Splitting.SplitAll(
        words,
        (text, matches) => Splitting.CodePointMatches(text, r => r.Value is >= '0' and <= '9', matches),
        individualDigits ? SplitBehavior.Isolated : SplitBehavior.Contiguous);
}

/// <summary>BERT's pre-tokenizer: split on whitespace (dropped), then isolate every punctuation char.</summary>
internal sealed class BertPreTokenizer : IPreTokenizer
{
    public void PreTokenize(List<Word> words)
    {
        Splitting.SplitAll(words, (text, matches) => Splitting.CodePointMatches(text, Rune.IsWhiteSpace, matches), SplitBehavior.Removed);
        Splitting.SplitAll(words, (text, matches) => Splitting.CodePointMatches(text, IsPunctuation, matches), SplitBehavior.Isolated);
    }

    /// <summary>ASCII punctuation (which includes symbols such as $ + &lt; = &gt; ^ ` |) or any Unicode P* char.</summary>
    public static bool IsPunctuation(Rune r) =>
        r.Value is (>= 0x21 and <= 0x2F) or (>= 0x3A and <= 0x40) or (>= 0x5B and <= 0x60) or (>= 0x7B and <= 0x7E)
        || Rune.IsPunctuation(r);
}

/// <summary>HF's <c>Punctuation</c> pre-tokenizer (BERT's punctuation rule with a chosen behavior).</summary>
internal sealed class PunctuationPreTokenizer(SplitBehavior behavior) : IPreTokenizer
{
    public void PreTokenize(List<Word> words) =>
        Splitting.SplitAll(words, (text, matches) => Splitting.CodePointMatches(text, BertPreTokenizer.IsPunctuation, matches), behavior);
}

/// <summary>HF's <c>WhitespaceSplit</c>: split on whitespace, which is dropped.</summary>
internal sealed class WhitespaceSplitPreTokenizer : IPreTokenizer
{
    public void PreTokenize(List<Word> words) =>
        Splitting.SplitAll(words, (text, matches) => Splitting.CodePointMatches(text, Rune.IsWhiteSpace, matches), SplitBehavior.Removed);
}

/// <summary>HF's <c>Whitespace</c>: keep runs of word chars and runs of other non-space chars.</summary>
internal sealed class WhitespacePreTokenizer : IPreTokenizer
{
    static readonly CodePointRegex wordsOrPunctuation = new(@"\w+|[^\w\s]+", "Whitespace");

    public void PreTokenize(List<Word> words) =>
        Splitting.SplitAll(words, (text, matches) => wordsOrPunctuation.Matches(text, invert: true, matches), SplitBehavior.Removed);
}

internal sealed class SequencePreTokenizer(IReadOnlyList<IPreTokenizer> steps) : IPreTokenizer
{
    public void PreTokenize(List<Word> words)
    {
        foreach (var step in steps) step.PreTokenize(words);
    }
}
