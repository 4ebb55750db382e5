using PeftSharp.IO;
using PeftSharp.Merging;
using PeftSharp.Peft;
using PeftSharp.Tests.Cli;
using PeftSharp.Tuners;
using PeftSharp.Tuners.SparseFt.Shira;
using static TorchSharp.torch;
using static PeftSharp.Tests.SparseFt.SparseFtRig;

namespace PeftSharp.Tests.SparseFt;

/// <summary>Sparse deltas as task vectors: <c>peftsharp merge</c> of several, and <c>merge-models</c>, write θ₀ + Σ w_i δ_i.</summary>
[Collection(SerialRng.Name)]
public class SparseCompositionTests
{
    static string TinyLlamaDir => Repo.Fixture("models", "tiny-llama");

    /// <summary>A SPARSE_FT adapter and a SHiRA adapter with random values, overlapping on v_proj; and θ₀ + 0.5 δ_a + 2 δ_b by plain ops.</summary>
    static (string A, string B, Dictionary<string, Tensor> Expected) TwoDeltas(string dir)
    {
        var a = Path.Combine(dir, "a");
        var b = Path.Combine(dir, "b");
        Create(Config("random-mask", "q_proj", "v_proj") with { RandomSeed = 1, InitWeights = false, Density = 0.1 }).Save(a);
        manual_seed(2);
        PeftModel.Create(TinyLlama(), new ShiraConfig { R = 1, RandomSeed = 9, InitWeights = false, TargetModules = ModuleSelector.Of(["v_proj", "up_proj"]) }).Save(b);
        var expected = TinyLlama().named_parameters().ToDictionary(p => p.name, p => p.parameter.detach().clone());
        foreach (var (folder, weight) in new[] { (a, 0.5), (b, 2.0) })
        {
            using var f = SafetensorsFile.Open(Path.Combine(folder, PeftModel.WeightsFile));
            foreach (var key in f.Names.Where(k => k.EndsWith("_values") || k.EndsWith(".shira_weight")))
            {
                var shira = key.EndsWith(".shira_weight");
                var module = key["base_model.model.".Length..key.LastIndexOf('.')];
                var w = expected[module + ".weight"];
                var idx = f.Load(key.Replace(shira ? ".shira_weight" : ".sparse_ft_values", shira ? ".shira_indices" : ".sparse_ft_indices")).to(ScalarType.Int64);
                var flat = shira ? idx[0] * w.shape[1] + idx[1] : idx;
                w.view(-1).index_put_(w.view(-1).index_select(0, flat) + weight * f.Load(key), flat);
            }
        }
        return (a, b, expected);
    }

    static void AssertWeights(Dictionary<string, Tensor> expected, string folder)
    {
        using var merged = Checkpoint.Open(folder);
        bool anyChanged = false;
        var original = TinyLlama().named_parameters().ToDictionary(p => p.name, p => p.parameter.detach());
        foreach (var (name, w) in expected)
        {
            Numerics.Close(w, merged.Load(name), 1e-6, name);
            anyChanged |= !Numerics.Same(original[name], merged.Load(name));
        }
        Assert.True(anyChanged);
    }

    [Fact]
    public void Merge_command_adds_several_sparse_deltas_with_their_weights()
    {
        using var scope = NewDisposeScope();
        var dir = IO.SafetensorsTests.TempDir();
        var (a, b, expected) = TwoDeltas(dir);
        var outDir = Path.Combine(dir, "merged");
        var r = CliRun.Run("merge", "--model", TinyLlamaDir, "--adapter", a, "--adapter", b, "--weights", "0.5,2", "--out", outDir);
        Assert.True(r.Code == 0, r.Err);
        AssertWeights(expected, outDir);
        CliRun.Run("merge", "--model", TinyLlamaDir, "--adapter", a, "--adapter", b, "--combination", "ties", "--out", Path.Combine(dir, "ties"))
            .AssertError("--combination ties", "linear");
    }

    [Fact]
    public void Merge_models_takes_sparse_deltas_as_task_vectors()
    {
        using var scope = NewDisposeScope();
        var dir = IO.SafetensorsTests.TempDir();
        var (a, b, expected) = TwoDeltas(dir);
        var outDir = Path.Combine(dir, "merged");
        ModelMerger.Run(MergeConfigYaml.Parse($"""
            merge_method: task_arithmetic
            base_model: {TinyLlamaDir}
            models:
              - model: {a}
                parameters: {"{"}weight: 0.5{"}"}
              - model: {b}
                parameters: {"{"}weight: 2.0{"}"}
            """), outDir);
        AssertWeights(expected, outDir);
    }
}
