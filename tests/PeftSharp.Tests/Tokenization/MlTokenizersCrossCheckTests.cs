using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;
using PeftSharp.Tokenization;

namespace PeftSharp.Tests.Tokenization;

/// <summary>
/// A second oracle for plain byte-level BPE: Microsoft.ML.Tokenizers' BpeTokenizer, built from the same vocab and
/// merges, must give the same ids as ours on a larger corpus (this repository's C# sources) than the HF fixtures.
/// It cannot replace ours (no added-token flags, ignore_merges, Split behaviors, offsets through normalizers, or
/// Oniguruma's code-point view of regexes), but where both apply they must agree.
/// </summary>
public class MlTokenizersCrossCheckTests
{
    [Fact]
    public void Byte_level_bpe_agrees_with_microsoft_ml_tokenizers_on_source_code()
    {
        var folder = Repo.Path("models", "tinycode-3m");
        var ours = HfTokenizer.Load(folder);
        var reference = MlBpe(Path.Combine(folder, "tokenizer.json"));
        var files = Directory.GetFiles(Repo.Path("src"), "*.cs", SearchOption.AllDirectories)
            .Concat(Directory.GetFiles(Repo.Path("tests", "PeftSharp.Tests"), "*.cs", SearchOption.AllDirectories))
            .Order(StringComparer.Ordinal)
            .ToList();
        Assert.True(files.Count >= 10, $"only {files.Count} source files found");

        foreach (var file in files)
        {
            var text = File.ReadAllText(file);
            Assert.Equal(reference.EncodeToIds(text), ours.Encode(text));
        }
    }

    static BpeTokenizer MlBpe(string tokenizerJson)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(tokenizerJson));
        var model = doc.RootElement.GetProperty("model");
        var specials = doc.RootElement.GetProperty("added_tokens").EnumerateArray()
            .ToDictionary(t => t.GetProperty("content").GetString()!, t => t.GetProperty("id").GetInt32());
        var options = new Microsoft.ML.Tokenizers.BpeOptions(
            model.GetProperty("vocab").EnumerateObject().Select(p => KeyValuePair.Create(p.Name, p.Value.GetInt32())))
        {
            Merges = [.. model.GetProperty("merges").EnumerateArray().Select(m => $"{m[0].GetString()} {m[1].GetString()}")],
            ByteLevel = true,
            SpecialTokens = specials,
            PreTokenizer = new RegexPreTokenizer(new Regex(ByteLevel.Gpt2Pattern), specials),
        };
        return BpeTokenizer.Create(options);
    }
}
