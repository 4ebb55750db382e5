using System.Text.Json;
using PeftSharp.Generation;
using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Generation;

public class GenerationTests
{
    [Theory]
    [InlineData("tiny-llama")]
    [InlineData("tiny-gpt2")]
    public void Greedy_matches_transformers(string name)
    {
        var model = AutoModel.Load(Repo.Fixture("models", name));
        var g = JsonDocument.Parse(File.ReadAllText(Repo.Fixture("models", name, "generation.json"))).RootElement;
        var prompt = g.GetProperty("prompt").EnumerateArray().Select(x => x.GetInt32()).ToArray();
        var expected = g.GetProperty("greedy_12").EnumerateArray().Select(x => x.GetInt32()).ToArray();
        var got = TextGenerator.Generate(model, [prompt], new GenerationOptions { MaxNewTokens = 12 })[0];
        Assert.Equal(expected, got);
    }

    [Fact]
    public void Tinycode_greedy_48_matches_pytorch()
    {
        var model = AutoModel.Load(Repo.Path("models", "tinycode-3m"));
        var r = JsonDocument.Parse(File.ReadAllText(Repo.Path("models", "tinycode-3m", "report.json"))).RootElement;
        var prompt = r.GetProperty("greedy_prompt_ids").EnumerateArray().Select(x => x.GetInt32()).ToArray();
        var expected = r.GetProperty("greedy_48_ids").EnumerateArray().Select(x => x.GetInt32()).ToArray();
        var got = TextGenerator.Generate(model, [prompt], new GenerationOptions { MaxNewTokens = expected.Length - prompt.Length })[0];
        Assert.Equal(expected, got);
    }

    [Fact]
    public void Left_padded_batch_equals_one_by_one()
    {
        var model = AutoModel.Load(Repo.Fixture("models", "tiny-llama"));
        int[][] prompts = [[5, 9, 33, 2, 7, 100, 12], [44, 3], [200, 201, 202, 203]];
        var opts = new GenerationOptions { MaxNewTokens = 6, PadTokenId = 1 };
        var batched = TextGenerator.Generate(model, prompts, opts);
        for (int i = 0; i < prompts.Length; i++)
            Assert.Equal(TextGenerator.Generate(model, [prompts[i]], opts)[0], batched[i]);
    }

    [Fact]
    public void Sampling_is_reproducible_per_seed_and_top_k_1_is_greedy()
    {
        var model = AutoModel.Load(Repo.Fixture("models", "tiny-llama"));
        int[] prompt = [5, 9, 33];
        var s = new GenerationOptions { MaxNewTokens = 10, DoSample = true, Temperature = 1.5, TopP = 0.9, Seed = 7 };
        var a = TextGenerator.Generate(model, [prompt], s)[0];
        Assert.Equal(a, TextGenerator.Generate(model, [prompt], s)[0]);
        Assert.NotEqual(a, TextGenerator.Generate(model, [prompt], s with { Seed = 8 })[0]);
        var greedy = TextGenerator.Generate(model, [prompt], new GenerationOptions { MaxNewTokens = 10 })[0];
        Assert.Equal(greedy, TextGenerator.Generate(model, [prompt], s with { TopP = 1.0, TopK = 1 })[0]);
    }

    [Fact]
    public void Stops_at_eos()
    {
        var model = AutoModel.Load(Repo.Fixture("models", "tiny-llama"));
        var g = JsonDocument.Parse(File.ReadAllText(Repo.Fixture("models", "tiny-llama", "generation.json"))).RootElement;
        var prompt = g.GetProperty("prompt").EnumerateArray().Select(x => x.GetInt32()).ToArray();
        var full = g.GetProperty("greedy_12").EnumerateArray().Select(x => x.GetInt32()).ToArray();
        // The first generated position whose token was not generated before it: generation must end right there.
        int at = Enumerable.Range(prompt.Length + 1, full.Length - prompt.Length - 1)
            .First(i => !full[prompt.Length..i].Contains(full[i]));
        var got = TextGenerator.Generate(model, [prompt], new GenerationOptions { MaxNewTokens = 12, EosTokenIds = [full[at]] })[0];
        Assert.Equal(full[..(at + 1)], got);
    }
}
