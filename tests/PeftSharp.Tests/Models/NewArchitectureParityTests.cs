using System.Text.Json.Nodes;
using PeftSharp.Generation;
using PeftSharp.IO;
using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Models;

/// <summary>
/// Qwen3, Gemma 2, Gemma 3 text and Phi-3 against tools/model-reference/make_fixtures.py (transformers' modeling code
/// re-implemented in PyTorch): logits to 1e-4, greedy tokens exactly, and each detail shown to move the logits.
/// </summary>
public class NewArchitectureParityTests(Xunit.Abstractions.ITestOutputHelper output)
{
    public static readonly TheoryData<string> Models = new("tiny-qwen3", "tiny-gemma2", "tiny-gemma3", "tiny-phi3");

    internal static string Folder(string name) => Repo.Path("tests", "fixtures", "models", name);

    internal static Tensor Expected(string name, string key)
    {
        using var f = SafetensorsFile.Open(Path.Combine(Folder(name), "expected.safetensors"));
        return f.Load(key);
    }

    internal static ModelInputs Inputs(string name, long length = 12)
    {
        using var f = SafetensorsFile.Open(Path.Combine(Folder(name), "expected.safetensors"));
        return ModelInputs.Ids(f.Load("input_ids")[.., ..(int)length], f.Load("attention_mask")[.., ..(int)length]);
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void Logits_match_the_reference(string name)
    {
        using var scope = NewDisposeScope();
        var model = AutoModel.Load(Folder(name));
        using var _ = no_grad();
        var logits = model.Forward(Inputs(name));
        output.WriteLine($"{name}: max abs diff {Numerics.MaxAbsDiff(Expected(name, "logits"), logits):G2}");
        Numerics.Close(Expected(name, "logits"), logits, 1e-4, name);
    }

    [Fact]
    public void Phi3_uses_the_short_factors_up_to_the_original_length_and_the_long_ones_past_it()
    {
        using var scope = NewDisposeScope();
        var model = AutoModel.Load(Folder("tiny-phi3"));
        using var _ = no_grad();
        var shortLogits = model.Forward(Inputs("tiny-phi3", 6));
        Numerics.Close(Expected("tiny-phi3", "logits_short"), shortLogits, 1e-4, "6 positions: short factors");
        // The same first 6 positions inside a 12-token sequence (past original_max_position_embeddings = 8) turn by the long factors.
        var longLogits = Expected("tiny-phi3", "logits")[.., ..6];
        Assert.True(Numerics.MaxAbsDiff(shortLogits, longLogits) > 1e-2, "long and short factors must give different logits");
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void Greedy_generation_matches_the_reference_with_the_cache_and_without(string name)
    {
        using var scope = NewDisposeScope();
        var model = AutoModel.Load(Folder(name));
        var gen = JsonNode.Parse(File.ReadAllText(Path.Combine(Folder(name), "generation.json")))!;
        var prompt = gen["prompt"]!.AsArray().Select(x => (int)x!).ToArray();
        var expected = gen["greedy"]!.AsArray().Select(x => (int)x!).ToArray();
        var cached = TextGenerator.Generate(model, [prompt], new GenerationOptions { MaxNewTokens = expected.Length - prompt.Length })[0];
        Assert.Equal(expected, cached);
        Assert.Equal(expected, GreedyWithoutCache(model, prompt, expected.Length - prompt.Length));
    }

    [Fact]
    public void Phi3_generation_refills_the_cache_once_when_it_passes_the_original_length()
    {
        var model = AutoModel.Load(Folder("tiny-phi3"));
        Assert.False(model.CacheExpires(0, 5));   // the prompt: nothing cached yet
        Assert.False(model.CacheExpires(5, 6));   // still within original_max_position_embeddings = 8
        Assert.True(model.CacheExpires(8, 9));    // position 8 is the first past it: keys cached with the short factors go
        Assert.False(model.CacheExpires(9, 10));  // cached with the long factors already
        Assert.False(AutoModel.Load(Folder("tiny-qwen3")).CacheExpires(8, 9));
    }

    internal static int[] GreedyWithoutCache(PretrainedModel model, int[] prompt, int newTokens)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var ids = tensor(prompt.Select(x => (long)x).ToArray()).unsqueeze(0);
        for (int i = 0; i < newTokens; i++)
            ids = cat([ids, model.Forward(ModelInputs.Ids(ids))[.., -1].argmax(-1, keepdim: true)], 1);
        return ids[0].data<long>().Select(x => (int)x).ToArray();
    }

    /// <summary>Each change undoes one detail of an architecture; the reference logits must notice every one.</summary>
    public static readonly TheoryData<string> Ablations = new(
        "qwen3: no q/k norm", "qwen3: no sliding window", "qwen3: window on every layer",
        "gemma2: no attention soft-capping", "gemma2: no final soft-capping", "gemma2: head_dim scaling", "gemma2: no sliding window",
        "gemma3: local layers with the global RoPE", "gemma3: global RoPE unscaled", "gemma3: no q/k norm", "gemma3: every layer global",
        "phi3: short factors for long sequences", "phi3: no attention factor", "phi3: no partial rotary");

    [Theory]
    [MemberData(nameof(Ablations))]
    public void Each_detail_moves_the_logits(string ablation)
    {
        using var scope = NewDisposeScope();
        var arch = ablation[..ablation.IndexOf(':')];
        var name = "tiny-" + arch;
        var c = ModelConfig.Load(Folder(name));
        var all = Enumerable.Repeat("full_attention", c.NumLayers).ToArray();
        var s = c.RopeScaling;
        c = ablation switch
        {
            "qwen3: no q/k norm" or "gemma3: no q/k norm" => c with { QkNorm = false },
            "qwen3: no sliding window" or "gemma2: no sliding window" or "gemma3: every layer global" => c with { LayerTypes = all },
            "qwen3: window on every layer" => c with { LayerTypes = null },
            "gemma2: no attention soft-capping" => c with { AttnLogitSoftcapping = null },
            "gemma2: no final soft-capping" => c with { FinalLogitSoftcapping = null },
            "gemma2: head_dim scaling" => c with { QueryPreAttnScalar = c.HeadDim },
            "gemma3: local layers with the global RoPE" => c with { LocalRopeTheta = null },
            "gemma3: global RoPE unscaled" => c with { RopeScaling = null },
            "phi3: short factors for long sequences" => c with { RopeScaling = s! with { LongFactor = s.ShortFactor } },
            "phi3: no attention factor" => c with { RopeScaling = s! with { AttentionFactor = 1.0 } },
            "phi3: no partial rotary" => c with { PartialRotaryFactor = 1.0, RopeScaling = s! with { ShortFactor = [.. s.ShortFactor!, 1, 1], LongFactor = [.. s.LongFactor!, 1, 1] } },
            _ => throw new ArgumentException(ablation),
        };
        var model = AutoModel.Create(c);
        using (var ckpt = Checkpoint.Open(Folder(name))) AutoModel.LoadWeights(model, ckpt);
        model.eval();
        using var _ = no_grad();
        var diff = Numerics.MaxAbsDiff(Expected(name, "logits"), model.Forward(Inputs(name)));
        Assert.True(diff > 1e-2, $"{ablation}: logits moved only {diff:G3}, so the parity test could not catch it");
    }
}
