using System.Globalization;

namespace PeftSharp.Tokenization;

/// <summary>An entry of tokenizer.json's <c>added_tokens</c>.</summary>
internal sealed record AddedToken(int Id, string Content, bool Special, bool SingleWord, bool LStrip, bool RStrip, bool Normalized);

/// <summary>A run of text, or an added token found in it.</summary>
internal readonly record struct Segment(NormalizedText Text, int? AddedTokenId);

/// <summary>
/// Finds added tokens in text before any pre-tokenization, as HF's <c>AddedVocabulary</c>: leftmost-longest
/// matches, single_word / lstrip / rstrip honoured. Tokens marked <c>normalized</c> are matched (in their
/// normalized form) on the normalized text instead of the raw one.
/// </summary>
internal sealed class AddedTokenMatcher
{
    readonly Dictionary<char, (string Pattern, AddedToken Token)[]> byFirstChar;

    public AddedTokenMatcher(IEnumerable<(string Pattern, AddedToken Token)> tokens)
    {
        byFirstChar = tokens
            .Where(t => t.Pattern.Length > 0)
            .GroupBy(t => t.Pattern[0])
            .ToDictionary(g => g.Key, g => g.OrderByDescending(t => t.Pattern.Length).ToArray());
    }

    public bool IsEmpty => byFirstChar.Count == 0;

    /// <summary>Splits <paramref name="text"/> into plain runs and added tokens, covering it in order.</summary>
    public void Split(NormalizedText text, List<Segment> output)
    {
        var s = text.Text;
        var done = 0; // end of the last emitted segment
        for (int i = 0; i < s.Length;)
        {
            var found = FindAt(s, i);
            if (found is not var (pattern, token)) { i++; continue; }
            int start = i, stop = i + pattern.Length;
            if (token.SingleWord && !(IsSingleWord(s, start, stop)))
            {
                i = stop; // the matcher resumes after a rejected match, as aho-corasick's iterator does
                continue;
            }
            if (token.LStrip) { while (start > done && char.IsWhiteSpace(s[start - 1])) start--; }
            if (token.RStrip) { while (stop < s.Length && char.IsWhiteSpace(s[stop])) stop++; }
            if (done < start) output.Add(new Segment(text.Slice(done, start), null));
            output.Add(new Segment(text.Slice(start, stop), token.Id));
            done = i = stop;
        }
        if (done < s.Length || s.Length == 0) output.Add(new Segment(done == 0 ? text : text.Slice(done, s.Length), null));
    }

    (string, AddedToken)? FindAt(string s, int i)
    {
        if (!byFirstChar.TryGetValue(s[i], out var candidates)) return null;
        foreach (var (pattern, token) in candidates)
        {
            if (string.CompareOrdinal(s, i, pattern, 0, pattern.Length) == 0) return (pattern, token);
        }
        return null;
    }

    // HF rejects a single_word match glued to a word char (regex \w) on either side.
    static bool IsSingleWord(string s, int start, int stop) =>
        (start == 0 || !IsWordChar(s[start - 1])) && (stop == s.Length || !IsWordChar(s[stop]));

    static bool IsWordChar(char c) => char.IsLetterOrDigit(c) || CharUnicodeInfo.GetUnicodeCategory(c) is
        UnicodeCategory.ConnectorPunctuation or UnicodeCategory.NonSpacingMark or UnicodeCategory.SpacingCombiningMark
        or UnicodeCategory.EnclosingMark or UnicodeCategory.LetterNumber;
}
