using System.IO.Compression;
using System.Text.Json;
using System.Text.Json.Nodes;
using PeftSharp.Tokenization;

namespace PeftSharp.Tests.Tokenization;

/// <summary>
/// Popular models' tokenizer.json files (SentencePiece BPE, Unigram, byte-level BPE) against HF's Rust
/// <c>tokenizers</c> 0.22: ids, offsets, ids with special tokens and decodes of awkward strings, as written by
/// tools/tokenizer-reference/make-references.js into tests/fixtures/tokenizers/reference.json.
/// A tokenizer there is a base file plus an overlay of sections (see the script), rebuilt here the same way.
/// </summary>
public class HubTokenizerTests
{
    static readonly string folder = Repo.Path("tests", "fixtures", "tokenizers");
    static readonly Lazy<List<Reference>> references = new(ReadReferences);
    static readonly Dictionary<string, HfTokenizer> tokenizers = [];

    sealed record Case(string Text, int[] Ids, int[][] Offsets, int[] IdsWithSpecial, string Decoded, string DecodedSkipSpecial);

    sealed record Reference(string Name, string Base, JsonObject Overlay, List<Case> Cases);

    public static TheoryData<string, int> Cases()
    {
        var data = new TheoryData<string, int>();
        foreach (var r in references.Value)
        {
            for (int i = 0; i < r.Cases.Count; i++) data.Add(r.Name, i);
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Encode_matches_hf_tokenizers(string name, int index)
    {
        var (tokenizer, c) = Load(name, index);

        var encoded = tokenizer.EncodeWithOffsets(c.Text, addSpecialTokens: false);

        Assert.Equal(c.Ids, encoded.Ids);
        Assert.Equal(c.Offsets.Select(o => new TokenSpan(o[0], o[1])), encoded.Offsets);
        Assert.Equal(c.IdsWithSpecial, tokenizer.Encode(c.Text));
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Decode_matches_hf_tokenizers(string name, int index)
    {
        var (tokenizer, c) = Load(name, index);

        Assert.Equal(c.Decoded, tokenizer.Decode(c.IdsWithSpecial));
        Assert.Equal(c.DecodedSkipSpecial, tokenizer.Decode(c.IdsWithSpecial, skipSpecialTokens: true));
    }

    [Fact]
    public void DeepSeek_V3_keeps_a_supplementary_plane_letter_with_its_space()
    {
        var (tokenizer, _) = Load("deepseek-v3", 0);

        // The former stand-in for letters above U+FFFF was U+4E00, which DeepSeek's CJK split names:
        // we gave [223 "Ġ", 117366 "ðĵ", ...]; HF keeps " 𓀀𓀁" as one word.
        Assert.Equal([90, 86387, 244, 225, 225, 117366, 225, 226], tokenizer.Encode("x 𓀀𓀁", addSpecialTokens: false));
    }

    [Fact]
    public void A_broken_precompiled_charsmap_is_named_in_the_error()
    {
        var json = Overlaid("unigram.json.gz", new JsonObject
        {
            ["normalizer"] = new JsonObject { ["type"] = "Precompiled", ["precompiled_charsmap"] = "AAAA" },
        });

        var e = Assert.Throws<InvalidDataException>(() => HfTokenizer.FromJson(json, source: "t5/tokenizer.json"));
        Assert.StartsWith("t5/tokenizer.json: normalizer Precompiled: precompiled_charsmap", e.Message);
    }

    static (HfTokenizer, Case) Load(string name, int index)
    {
        var reference = references.Value.Single(r => r.Name == name);
        lock (tokenizers)
        {
            if (!tokenizers.TryGetValue(name, out var tokenizer))
            {
                tokenizer = HfTokenizer.FromJson(Overlaid(reference.Base, reference.Overlay), source: $"{name}/tokenizer.json");
                tokenizers[name] = tokenizer;
            }
            return (tokenizer, reference.Cases[index]);
        }
    }

    /// <summary>The base file with the overlay's sections replaced and its model_options merged into the model.</summary>
    static string Overlaid(string baseName, JsonObject overlay)
    {
        var root = JsonNode.Parse(ReadBase(baseName))!.AsObject();
        foreach (var (key, value) in overlay)
        {
            if (key == "model_options")
            {
                foreach (var (option, setting) in value!.AsObject()) root["model"]![option] = setting?.DeepClone();
            }
            else root[key] = value?.DeepClone();
        }
        return root.ToJsonString();
    }

    static string ReadBase(string name)
    {
        if (name == "bpe512") return File.ReadAllText(Repo.Path("tests", "fixtures", "peft-reference", "models", "tokenizer-bpe512", "tokenizer.json"));
        using var gzip = new GZipStream(File.OpenRead(Path.Combine(folder, name)), CompressionMode.Decompress);
        using var reader = new StreamReader(gzip);
        return reader.ReadToEnd();
    }

    static List<Reference> ReadReferences()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(folder, "reference.json")));
        return [.. doc.RootElement.EnumerateArray().Select(r => new Reference(
            r.GetProperty("name").GetString()!,
            r.GetProperty("base").GetString()!,
            JsonNode.Parse(r.GetProperty("overlay").GetRawText())!.AsObject(),
            [.. r.GetProperty("cases").EnumerateArray().Select(c => new Case(
                c.GetProperty("text").GetString()!,
                Ints(c.GetProperty("ids")),
                [.. c.GetProperty("offsets").EnumerateArray().Select(Ints)],
                Ints(c.GetProperty("ids_with_special")),
                c.GetProperty("decoded").GetString()!,
                c.GetProperty("decoded_skip_special").GetString()!))]))];
    }

    static int[] Ints(JsonElement e) => [.. e.EnumerateArray().Select(i => i.GetInt32())];
}
