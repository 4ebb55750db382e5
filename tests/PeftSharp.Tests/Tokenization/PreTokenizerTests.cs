using System.Globalization;
using System.Text;
using PeftSharp.Tokenization;

namespace PeftSharp.Tests.Tokenization;

/// <summary>Pre-tokenizers against behaviour documented by HF tokenizers (Oniguruma regexes, split behaviors).</summary>
public class PreTokenizerTests
{
    // Llama 3's split regex (Qwen2's differs only in \p{N} instead of \p{N}{1,3}).
    const string Llama3Pattern = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    static string[] Words(IPreTokenizer preTokenizer, string text)
    {
        var words = new List<Word> { Word.Whole(NormalizedText.Verbatim(text)) };
        preTokenizer.PreTokenize(words);
        return [.. words.Select(w => w.Text.ToString())];
    }

    [Fact]
    public void Llama3_regex_sees_emoji_and_supplementary_letters_as_one_code_point()
    {
        var split = new SplitPreTokenizer(new CodePointRegex(Llama3Pattern, "test"), SplitBehavior.Isolated, invert: false);

        // Oniguruma reads "🚀abc" as [^\r\n\p{L}\p{N}]?\p{L}+ and the bold 𝐀𝐁 (U+1D400, U+1D401) as letters;
        // a char-by-char .NET regex would give "🚀", "abc" and " 𝐀𝐁", "c".
        Assert.Equal(
            ["Hello", " world", " ", "123", "45", " 🚀", "abc", " x", "🚀abc", " I", "'M", " 𝐀𝐁c", "\n\n", " ", " end"],
            Words(split, "Hello world 12345 🚀abc x🚀abc I'M 𝐀𝐁c\n\n  end"));
    }

    [Fact]
    public void Stand_in_chars_have_the_category_they_stand_for()
    {
        var regex = new CodePointRegex(Llama3Pattern, "test");
        foreach (var category in Enum.GetValues<UnicodeCategory>().Where(c => c != UnicodeCategory.Surrogate))
        {
            Assert.Equal(category, CharUnicodeInfo.GetUnicodeCategory(regex.StandIn(category)));
        }
    }

    // DeepSeek V3 isolates CJK and kana runs before its word regex. A hieroglyph (U+13000, category Lo) is in none of
    // those ranges, so Oniguruma keeps " 𓀀𓀁" together as [^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+.
    [Theory]
    [InlineData("[一-龥぀-ゟ゠-ヿ]+")]
    [InlineData(@"[\u4E00-\u9FA5\uA000-\uA8FF]+")]
    [InlineData(@"\p{IsCJKUnifiedIdeographs}+|\p{IsYiSyllables}+")]
    [InlineData("[ꡀ]+|[Àà]+")]
    public void A_stand_in_is_never_a_char_the_pattern_names(string cjk)
    {
        var regex = new CodePointRegex(cjk, "test");
        foreach (var category in new[] { UnicodeCategory.OtherLetter, UnicodeCategory.UppercaseLetter, UnicodeCategory.LowercaseLetter })
        {
            Assert.False(new System.Text.RegularExpressions.Regex(cjk).IsMatch(regex.StandIn(category).ToString()), $"{category}");
        }
        var sequence = new SequencePreTokenizer([
            new SplitPreTokenizer(regex, SplitBehavior.Isolated, invert: false),
            new SplitPreTokenizer(new CodePointRegex(@"[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+|\s+", "test"), SplitBehavior.Isolated, invert: false)]);

        Assert.Equal(["x", " 𓀀𓀁", " 𝐀𝐁"], Words(sequence, "x 𓀀𓀁 𝐀𝐁"));
    }

    // The example of HF's SplitDelimiterBehavior documentation.
    [Theory]
    [InlineData("Removed", "the|final|countdown")]
    [InlineData("Isolated", "the|-|final|-|-|countdown")]
    [InlineData("MergedWithPrevious", "the-|final-|-|countdown")]
    [InlineData("MergedWithNext", "the|-final|-|-countdown")]
    [InlineData("Contiguous", "the|-|final|--|countdown")]
    public void Split_behaviors_match_hf(string behavior, string expected)
    {
        var split = new SplitPreTokenizer(new CodePointRegex("-", "test"), Splitting.ParseBehavior(behavior, "test"), invert: false);

        Assert.Equal(expected.Split('|'), Words(split, "the-final--countdown"));
    }

    [Fact]
    public void Inverted_split_keeps_the_matches()
    {
        var split = new SplitPreTokenizer(new CodePointRegex(@"\d+", "test"), SplitBehavior.Removed, invert: true);

        Assert.Equal(["12", "345"], Words(split, "a12b345c"));
    }

    [Fact]
    public void Byte_level_maps_bytes_and_adds_the_prefix_space()
    {
        Assert.Equal(["ĠHello", "Ġworld", "Ċ"], Words(new ByteLevelPreTokenizer(addPrefixSpace: true, useRegex: true), "Hello world\n"));
        Assert.Equal(["Ġhi"], Words(new ByteLevelPreTokenizer(addPrefixSpace: true, useRegex: true), " hi"));
        Assert.Equal(["cafÃ©ĠðŁļĢ"], Words(new ByteLevelPreTokenizer(addPrefixSpace: false, useRegex: false), "café 🚀"));
    }

    [Fact]
    public void Byte_level_words_keep_their_original_offsets()
    {
        var words = new List<Word> { Word.Whole(NormalizedText.Verbatim("a é🚀")) };
        new ByteLevelPreTokenizer(addPrefixSpace: false, useRegex: true).PreTokenize(words);

        Assert.Equal(["a", "ĠÃ©", "ðŁļĢ"], words.Select(w => w.Text.ToString()));
        Assert.Equal(new TokenSpan(1, 3), words[1].OriginalSpan(0, 3)); // " é"
        Assert.Equal(new TokenSpan(2, 3), words[1].OriginalSpan(1, 2)); // first byte of é is é
        Assert.Equal(new TokenSpan(3, 5), words[2].OriginalSpan(0, 4)); // the emoji's two UTF-16 chars
    }

    [Fact]
    public void Digits_isolated_or_contiguous()
    {
        Assert.Equal(["abc", "1", "2", "3", "d"], Words(new DigitsPreTokenizer(individualDigits: true), "abc123d"));
        Assert.Equal(["abc", "123", "d"], Words(new DigitsPreTokenizer(individualDigits: false), "abc123d"));
    }

    [Fact]
    public void Bert_splits_whitespace_and_isolates_ascii_and_unicode_punctuation()
    {
        Assert.Equal(["a", "$", "b", "+", "c", "«", "d", "»"], Words(new BertPreTokenizer(), " a$b +c\t«d»"));
    }

    [Fact]
    public void Sequences_run_in_order()
    {
        // SmolLM2 / StarCoder style: digits first, then GPT-2 byte level.
        var smol = new SequencePreTokenizer([new DigitsPreTokenizer(true), new ByteLevelPreTokenizer(false, true)]);

        Assert.Equal(["x", "Ġ=", "Ġ", "4", "2"], Words(smol, "x = 42"));
    }

    [Fact]
    public void Lowercase_and_nfc_keep_alignment()
    {
        var text = NormalizedText.Verbatim("İe\u0301");
        var lower = new Lowercase().Normalize(text);
        var nfc = new UnicodeNormalizer(NormalizationForm.FormC).Normalize(text);

        Assert.Equal("i\u0307e\u0301", lower.Text); // Rust's full lowercase mapping of U+0130
        Assert.Equal(new TokenSpan(0, 1), lower.OriginalSpan(0, 2));
        Assert.Equal("İé", nfc.Text);
        // HF points a composed char at its first component only (tests/fixtures/tokenizers/reference.json, "decomposed: ...").
        Assert.Equal(new TokenSpan(1, 2), nfc.OriginalSpan(1, 2));
    }
}
