using System.Text.Json;
using PeftSharp.IO;
using PeftSharp.Merging;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Merging;

/// <summary>PEFT LoRA adapters as merge inputs (their deltas are task vectors) and as the merge output.</summary>
public class AdapterMergeTests(ITestOutputHelper output)
{
    readonly string dir = TestDirs.New();
    static string TinyLlama => Repo.Fixture("models", "tiny-llama");
    static string Combine(string adapter) => Repo.Fixture("combine", adapter);

    string Merge(string yaml)
    {
        var outDir = Path.Combine(dir, "out");
        ModelMerger.Run(MergeConfigYaml.Parse(yaml), outDir);
        return outDir;
    }

    [Fact]
    public void An_adapter_with_weight_one_reproduces_peft_merge_and_unload()
    {
        var outDir = Merge($"merge_method: task_arithmetic\nbase_model: {TinyLlama}\nmodels:\n  - model: {Repo.Fixture("adapters", "llama-lora-qv")}\n    parameters: {{weight: 1.0}}");
        using var expected = SafetensorsFile.Open(Repo.Fixture("adapters", "llama-lora-qv", "merged_model.safetensors"));
        using var merged = Checkpoint.Open(outDir);
        double worst = 0;
        foreach (var n in expected.Names)
        {
            using var scope = NewDisposeScope();
            worst = Math.Max(worst, Numerics.MaxAbsDiff(expected.Load(n), merged.Load(n)));
        }
        output.WriteLine($"llama-lora-qv merged: max abs diff {worst:g3}");
        Assert.True(worst <= 1e-5, $"max abs diff {worst:g3}");
        Assert.True(File.Exists(Path.Combine(outDir, "config.json")));
    }

    [Fact]
    public void Task_arithmetic_of_two_adapters_matches_peft_cat_combination()
    {
        // PEFT's "cat" combination is exactly sum_i w_i * scaling_i * B_i @ A_i.
        var outDir = Merge($"""
            merge_method: task_arithmetic
            base_model: {TinyLlama}
            models:
              - model: {Combine("a")}
                parameters: {"{"}weight: 0.7{"}"}
              - model: {Combine("b")}
                parameters: {"{"}weight: 0.5{"}"}
            """);
        using var expected = SafetensorsFile.Open(Combine("expected_delta.safetensors"));
        using var merged = Checkpoint.Open(outDir);
        using var b = Checkpoint.Open(TinyLlama);
        double worst = 0;
        foreach (var key in expected.Names.Where(k => k.StartsWith("cat|", StringComparison.Ordinal)))
        {
            var name = key["cat|base_model.model.".Length..] + ".weight";
            worst = Math.Max(worst, Numerics.MaxAbsDiff(expected.Load(key), merged.Load(name) - b.Load(name)));
        }
        output.WriteLine($"two adapters vs PEFT cat: max abs diff {worst:g3}");
        Assert.True(worst <= 1e-6, $"max abs diff {worst:g3}");
    }

    [Fact]
    public void Adapter_output_is_the_rank_r_svd_of_the_merged_delta()
    {
        var outDir = Merge($"""
            merge_method: task_arithmetic
            base_model: {TinyLlama}
            adapter_output: {"{"}r: 6, lora_alpha: 12{"}"}
            models:
              - model: {Combine("a")}
                parameters: {"{"}weight: 0.7{"}"}
              - model: {Combine("b")}
                parameters: {"{"}weight: 0.5{"}"}
            """);
        using var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "adapter_config.json")));
        Assert.Equal("LORA", config.RootElement.GetProperty("peft_type").GetString());
        Assert.Equal(6, config.RootElement.GetProperty("r").GetInt32());
        Assert.Equal(4, config.RootElement.GetProperty("target_modules").GetArrayLength());

        // PEFT's "svd" combination: the rank-6 truncation of sum_i w_i * delta_i.
        using var expected = SafetensorsFile.Open(Combine("expected_delta.safetensors"));
        using var written = AdapterDelta.Open(outDir);
        using var b = Checkpoint.Open(TinyLlama);
        double worst = 0;
        foreach (var key in expected.Names.Where(k => k.StartsWith("svd|", StringComparison.Ordinal)))
        {
            var name = key["svd|base_model.model.".Length..] + ".weight";
            using var baseWeight = b.Load(name);
            worst = Math.Max(worst, Numerics.MaxAbsDiff(expected.Load(key), written.Delta(name, baseWeight)!));
        }
        output.WriteLine($"rank-6 adapter output vs PEFT svd: max abs diff {worst:g3}");
        Assert.True(worst <= 1e-5, $"max abs diff {worst:g3}");
    }

    [Fact]
    public void Conv1d_adapters_round_trip_through_adapter_output()
    {
        var gpt2 = Repo.Fixture("models", "tiny-gpt2");
        var adapter = Repo.Fixture("adapters", "gpt2-lora-conv1d");
        var outDir = Merge($"merge_method: task_arithmetic\nbase_model: {gpt2}\nadapter_output: {{r: 4}}\nmodels:\n  - model: {adapter}\n    parameters: {{weight: 1}}");
        using var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "adapter_config.json")));
        Assert.True(config.RootElement.GetProperty("fan_in_fan_out").GetBoolean());
        using var original = AdapterDelta.Open(adapter);
        using var written = AdapterDelta.Open(outDir);
        using var b = Checkpoint.Open(gpt2);
        Assert.Equal(original.Targets.Order(), written.Targets.Order());
        foreach (var name in original.Targets)
        {
            using var w = b.Load(name);
            using var d = original.Delta(name, w)!;
            Assert.Equal(w.shape, d.shape);   // Conv1D stores [in, out]: the delta is transposed to match
            Numerics.Close(d, written.Delta(name, w)!, 1e-5, name);
        }
    }

    [Fact]
    public void Rslora_scaling_is_alpha_over_sqrt_r()
    {
        var folder = Repo.Fixture("adapters", "llama-lora-alllinear-rslora");
        using var adapter = AdapterDelta.Open(folder);
        using var file = SafetensorsFile.Open(Path.Combine(folder, "adapter_model.safetensors"));
        using var b = Checkpoint.Open(TinyLlama);
        const string m = "model.layers.1.mlp.down_proj";
        using var w = b.Load(m + ".weight");
        using var expected = file.Load($"base_model.model.{m}.lora_B.weight").matmul(file.Load($"base_model.model.{m}.lora_A.weight")) * (16 / Math.Sqrt(8));
        Numerics.Close(expected, adapter.Delta(m + ".weight", w)!, 1e-6);
        Assert.Equal(14, adapter.LoraModules.Count());
    }

    [Fact]
    public void An_adapter_for_another_model_is_refused_by_name()
    {
        var e = Assert.Throws<MergeException>(() => Merge(
            $"merge_method: task_arithmetic\nbase_model: {Repo.Fixture("models", "tiny-gpt2")}\nmodels:\n  - model: {Repo.Fixture("adapters", "llama-lora-qv")}\n    parameters: {{weight: 1}}"));
        Assert.Contains("changes 'model.layers.0.self_attn.", e.Message);
        Assert.Contains("is this adapter for another model?", e.Message);
    }

    [Fact]
    public void An_adapter_without_a_base_asks_for_one()
    {
        var e = Assert.Throws<MergeException>(() => Merge(
            $"merge_method: linear\nmodels:\n  - model: {Repo.Fixture("adapters", "llama-lora-qv")}\n    parameters: {{weight: 1}}"));
        Assert.Contains("needs a model to apply to", e.Message);
    }
}
