using System.Text.Json;
using PeftSharp.Tokenization;

namespace PeftSharp.Tests.Tokenization;

/// <summary>Byte-level BPE against ids and decodes written by transformers 5.17 (tests/fixtures/peft-reference).</summary>
public class BpeFixtureTests
{
    static readonly string folder = Repo.Path("tests", "fixtures", "peft-reference", "models", "tokenizer-bpe512");

    public static TheoryData<int> Cases() => [.. Enumerable.Range(0, ReadCases().Count)];

    static List<(string Text, int[] Ids, string Decoded)> ReadCases()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(folder, "tokenizer_cases.json")));
        return [.. doc.RootElement.EnumerateArray().Select(c => (
            c.GetProperty("text").GetString()!,
            c.GetProperty("ids").EnumerateArray().Select(i => i.GetInt32()).ToArray(),
            c.GetProperty("decoded").GetString()!))];
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Encode_matches_transformers(int index)
    {
        var tokenizer = HfTokenizer.Load(folder);
        var (text, ids, _) = ReadCases()[index];

        // The fixture is hf(text): add_special_tokens=True, and this tokenizer's template adds nothing.
        Assert.Equal(ids, tokenizer.Encode(text));
        Assert.Equal(ids, tokenizer.Encode(text, addSpecialTokens: false));
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Decode_matches_transformers(int index)
    {
        var tokenizer = HfTokenizer.Load(folder);
        var (_, ids, decoded) = ReadCases()[index];

        Assert.Equal(decoded, tokenizer.Decode(ids));
    }

    [Fact]
    public void Special_tokens_come_from_the_config()
    {
        var tokenizer = HfTokenizer.Load(folder);

        Assert.Equal(0, tokenizer.BosId);
        Assert.Equal(0, tokenizer.EosId);
        Assert.Equal(1, tokenizer.PadId);
        Assert.Null(tokenizer.UnkId);
        Assert.Equal(512, tokenizer.VocabSize);
        Assert.Equal("<|pad|>", tokenizer.IdToToken(1));
        Assert.Equal("Ġ", tokenizer.IdToToken(tokenizer.TokenToId("Ġ")!.Value));
    }

    [Fact]
    public void Special_tokens_in_text_are_single_tokens_and_can_be_skipped()
    {
        var tokenizer = HfTokenizer.Load(folder);

        var ids = tokenizer.Encode("Hello<|endoftext|><|pad|>");

        Assert.Equal([41, 70, 77, 303, 0, 1], ids);
        Assert.Equal("Hello<|endoftext|><|pad|>", tokenizer.Decode(ids));
        Assert.Equal("Hello", tokenizer.Decode(ids, skipSpecialTokens: true));
    }
}
