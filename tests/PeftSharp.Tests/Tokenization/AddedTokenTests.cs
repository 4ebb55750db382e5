using PeftSharp.Tokenization;

namespace PeftSharp.Tests.Tokenization;

/// <summary>Added-token matching as HF's AddedVocabulary does it (leftmost-longest, lstrip, rstrip, single_word).</summary>
public class AddedTokenTests
{
    static string[] Split(string text, params AddedToken[] tokens)
    {
        var segments = new List<Segment>();
        new AddedTokenMatcher(tokens.Select(t => (t.Content, t))).Split(NormalizedText.Verbatim(text), segments);
        return [.. segments.Select(s => s.AddedTokenId is int id ? $"[{id}:{s.Text.Text}]" : s.Text.Text)];
    }

    static AddedToken Token(int id, string content, bool lstrip = false, bool rstrip = false, bool singleWord = false) =>
        new(id, content, Special: true, singleWord, lstrip, rstrip, Normalized: false);

    [Fact]
    public void Longest_match_wins_at_the_leftmost_position()
    {
        Assert.Equal(["x", "[1:<a><b>]", "[0:<a>]"], Split("x<a><b><a>", Token(0, "<a>"), Token(1, "<a><b>")));
    }

    [Fact]
    public void Lstrip_and_rstrip_absorb_the_neighbouring_whitespace()
    {
        Assert.Equal(["a", "[0: <mask>]", " b"], Split("a <mask> b", Token(0, "<mask>", lstrip: true)));
        Assert.Equal(["a ", "[0:<mask> ]", "b"], Split("a <mask> b", Token(0, "<mask>", rstrip: true)));
    }

    [Fact]
    public void Single_word_tokens_do_not_match_inside_words()
    {
        Assert.Equal(["x<m> ", "[0:<m>]"], Split("x<m> <m>", Token(0, "<m>", singleWord: true)));
    }

    [Fact]
    public void Text_without_tokens_is_one_segment()
    {
        Assert.Equal(["plain text"], Split("plain text", Token(0, "<s>")));
        Assert.Equal([""], Split("", Token(0, "<s>")));
    }
}
