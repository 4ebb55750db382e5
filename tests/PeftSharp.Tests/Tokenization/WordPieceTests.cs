using PeftSharp.Tokenization;

namespace PeftSharp.Tests.Tokenization;

/// <summary>A hand-built BERT tokenizer.json: BertNormalizer, BertPreTokenizer, WordPiece, [CLS] $A [SEP].</summary>
public class WordPieceTests
{
    // Ids: specials 0-4, then words; "##" marks a piece that continues a word.
    static readonly string[] vocab =
    [
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "token", "##izer", "##s", "hello",
        ",", "!", "cafe", "東", "京", "un", "##believ", "##able", ".", "world",
    ];

    internal static string TokenizerJson(string normalizer = """{"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true}""") => $$$"""
        {
          "version": "1.0",
          "added_tokens": [
            {{{string.Join(",\n", vocab[..5].Select((t, i) =>
                $$"""{"id": {{i}}, "content": "{{t}}", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}"""))}}}
          ],
          "normalizer": {{{normalizer}}},
          "pre_tokenizer": {"type": "BertPreTokenizer"},
          "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [],
            "special_tokens": {
              "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
              "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}
            }
          },
          "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
          "model": {
            "type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100,
            "vocab": { {{{string.Join(", ", vocab.Select((t, i) => $"\"{t}\": {i}"))}}} }
          }
        }
        """;

    static HfTokenizer Bert() => HfTokenizer.FromJson(TokenizerJson(), """{"cls_token": "[CLS]", "unk_token": "[UNK]", "pad_token": "[PAD]"}""");

    const string Text = "Hello, WORLD! The tokenizers café 東京 unbelievable.";

    [Fact]
    public void Encodes_lowercased_wordpieces_between_cls_and_sep()
    {
        var ids = Bert().Encode(Text);

        //           [CLS] hello ,  world !  the token ##izer ##s cafe 東  京  un ##believ ##able . [SEP]
        Assert.Equal([2, 9, 10, 19, 11, 5, 6, 7, 8, 12, 13, 14, 15, 16, 17, 18, 3], ids);
    }

    [Fact]
    public void Without_special_tokens_there_is_no_cls_or_sep()
    {
        Assert.Equal([9, 10, 19], Bert().Encode("Hello, World", addSpecialTokens: false));
    }

    [Fact]
    public void Decode_joins_pieces_and_cleans_up_punctuation()
    {
        var tokenizer = Bert();
        var ids = tokenizer.Encode(Text);

        Assert.Equal("hello, world! the tokenizers cafe 東 京 unbelievable.", tokenizer.Decode(ids, skipSpecialTokens: true));
        Assert.Equal("[CLS] hello, world! the tokenizers cafe 東 京 unbelievable. [SEP]", tokenizer.Decode(ids));
    }

    [Fact]
    public void A_word_with_an_unknown_rest_is_one_unk()
    {
        // "tokenq": "token" matches but "##q" does not, so the whole word is [UNK], as in HF.
        Assert.Equal([1, 9, 1], Bert().Encode("tokenq hello xyz", addSpecialTokens: false));
    }

    [Fact]
    public void Special_tokens_in_raw_text_are_matched_before_lowercasing()
    {
        var tokenizer = Bert();

        Assert.Equal([9, 4, 19], tokenizer.Encode("hello [MASK] world", addSpecialTokens: false));
        Assert.Equal([9, 1, 1, 1, 19], tokenizer.Encode("hello [mask] world", addSpecialTokens: false)); // "[", "mask", "]"
    }

    [Fact]
    public void Offsets_point_into_the_original_text()
    {
        var encoding = Bert().EncodeWithOffsets(Text);
        string Span(int i) => Text[encoding.Offsets[i].Start..encoding.Offsets[i].End];

        Assert.Equal(new TokenSpan(0, 0), encoding.Offsets[0]); // [CLS]
        Assert.Equal("Hello", Span(1));
        Assert.Equal("WORLD", Span(3));
        Assert.Equal("token", Span(6));
        Assert.Equal("izer", Span(7));
        Assert.Equal("café", Span(9));
        Assert.Equal("東", Span(10));
        Assert.Equal("believ", Span(13));
    }

    [Fact]
    public void Control_chars_and_lone_surrogates_are_cleaned_away()
    {
        Assert.Equal([9, 19], Bert().Encode("hel\u0000lo\uD800 \u200Bworld", addSpecialTokens: false));
    }

    [Fact]
    public void Unsupported_components_are_named_in_the_error()
    {
        var json = TokenizerJson(normalizer: """{"type": "Nmt"}""");

        var error = Assert.Throws<NotSupportedException>(() => HfTokenizer.FromJson(json, source: "/models/x/tokenizer.json"));

        Assert.Contains("/models/x/tokenizer.json", error.Message);
        Assert.Contains("normalizer type 'Nmt'", error.Message);
        Assert.Contains("BertNormalizer", error.Message);
    }
}
