using PeftSharp.IO;
using PeftSharp.Merging;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Merging;

/// <summary>Parity with tests/fixtures/peft-reference/merge, computed by PEFT's merge_utils (weights 1.0, 0.6, 0.3).</summary>
public class MergeFixtureTests(ITestOutputHelper output)
{
    const double Tolerance = 1e-6;
    static readonly double[] Weights = [1.0, 0.6, 0.3];
    static string Dir(string file = "") => Repo.Fixture("merge", file);

    static double Compare(string method, Func<string, Tensor> merged)
    {
        using var expected = SafetensorsFile.Open(Dir("expected.safetensors"));
        using var base_ = SafetensorsFile.Open(Dir("base.safetensors"));
        double worst = 0;
        foreach (var name in base_.Names)
        {
            using var scope = NewDisposeScope();
            var diff = Numerics.MaxAbsDiff(expected.Load($"{method}|{name}"), merged(name));
            Assert.True(diff <= Tolerance, $"{method} {name}: max abs diff {diff:g3}");
            worst = Math.Max(worst, diff);
        }
        return worst;
    }

    static (Tensor Base, List<Tensor> TaskVectors) Load(string name)
    {
        var b = Checkpoint.Open(Dir("base.safetensors"));
        var baseWeight = b.Load(name);
        b.Dispose();
        var tvs = new List<Tensor>();
        for (int i = 0; i < 3; i++)
        {
            using var ft = Checkpoint.Open(Dir($"ft{i}.safetensors"));
            tvs.Add(ft.Load(name) - baseWeight);
        }
        return (baseWeight, tvs);
    }

    [Theory]
    [InlineData("task_arithmetic")]
    [InlineData("ties_0.4_total")]
    [InlineData("ties_0.4_frequency")]
    [InlineData("magnitude_prune_0.3")]
    public void Peft_merge_functions_match_merge_utils(string method)
    {
        var worst = Compare(method, name =>
        {
            var (b, tvs) = Load(name);
            return b + method switch
            {
                "task_arithmetic" => MergeMath.TaskArithmetic(tvs, Weights),
                "ties_0.4_total" => MergeMath.Ties(tvs, Weights, 0.4, SignMethod.Total),
                "ties_0.4_frequency" => MergeMath.Ties(tvs, Weights, 0.4, SignMethod.Frequency),
                "magnitude_prune_0.3" => MergeMath.MagnitudePruneMerge(tvs, Weights, 0.3),
                _ => throw new ArgumentException(method),
            };
        });
        output.WriteLine($"{method}: max abs diff {worst:g3}");
    }

    [Theory]
    [InlineData("task_arithmetic", "task_arithmetic", "")]
    [InlineData("ties_0.4_total", "ties", "density: 0.4\n  convention: peft")]
    [InlineData("ties_0.4_frequency", "ties", "density: 0.4\n  convention: peft\n  majority_sign_method: frequency")]
    [InlineData("magnitude_prune_0.3", "magnitude_prune", "density: 0.3")]
    public void Yaml_merges_match_merge_utils(string fixture, string method, string parameters)
    {
        var yaml = $"""
            merge_method: {method}
            base_model: base.safetensors
            parameters:
              {(parameters == "" ? "normalize: false" : parameters)}
            models:
              - model: ft0.safetensors
                parameters: {"{"}weight: 1.0{"}"}
              - model: ft1.safetensors
                parameters: {"{"}weight: 0.6{"}"}
              - model: ft2.safetensors
                parameters: {"{"}weight: 0.3{"}"}
            """;
        var worst = MergeAndCompare(fixture, yaml);
        output.WriteLine($"{fixture} through YAML ({method}): max abs diff {worst:g3}");
    }

    [Fact]
    public void Yaml_linear_soup_matches_the_uniform_average()
    {
        var yaml = """
            merge_method: linear
            models:
              - model: ft0.safetensors
                parameters: {weight: 1.0}
              - model: ft1.safetensors
                parameters: {weight: 1.0}
              - model: ft2.safetensors
                parameters: {weight: 1.0}
            """;
        var worst = MergeAndCompare("soup_uniform", yaml);
        output.WriteLine($"soup_uniform through YAML (linear): max abs diff {worst:g3}");
    }

    [Fact]
    public void Mergekit_ties_convention_is_the_yaml_default_and_differs_from_peft()
    {
        // Same data, mergekit's convention (elect on weighted values, divide by the agreeing weights): not PEFT's numbers.
        using var expected = SafetensorsFile.Open(Dir("expected.safetensors"));
        var config = MergeConfigYaml.Parse("""
            merge_method: ties
            base_model: base.safetensors
            parameters: {density: 0.4}
            models:
              - {model: ft0.safetensors, parameters: {weight: 1.0}}
              - {model: ft1.safetensors, parameters: {weight: 0.6}}
              - {model: ft2.safetensors, parameters: {weight: 0.3}}
            """) with { BaseDirectory = Dir() };
        var outDir = Path.Combine(TestDirs.New(), "out");
        ModelMerger.Run(config, outDir);
        using var merged = Checkpoint.Open(outDir);
        const string n = "model.layers.0.mlp.up_proj.weight";
        var (b, tvs) = Load(n);
        Assert.True(Numerics.MaxAbsDiff(expected.Load($"ties_0.4_total|{n}"), merged.Load(n)) > 1e-3);
        // and it is what mergekit computes: trim, elect on weighted values, sum of agreeing / sum of their weights
        var trimmed = stack(tvs.Select(t => MergeMath.MagnitudePrune(t, 0.4)).ToList());
        var weighted = MergeMath.Weighted(trimmed, Weights);
        var agree = MergeMath.SignAgreement(weighted, MergeMath.ElectSign(weighted, SignMethod.Total)).to(ScalarType.Float32);
        var divisor = MergeMath.Weighted(agree, Weights).sum(dim: 0);
        var mergekit = b + (weighted * agree).sum(dim: 0) / divisor.masked_fill(divisor.eq(0), 1);
        Numerics.Close(mergekit, merged.Load(n), 1e-6);
    }

    double MergeAndCompare(string fixture, string yaml)
    {
        var config = MergeConfigYaml.Parse(yaml) with { BaseDirectory = Dir() };
        var outDir = Path.Combine(TestDirs.New(), "out");
        var result = ModelMerger.Run(config, outDir);
        Assert.Equal(21, result.Tensors);
        using var merged = Checkpoint.Open(outDir);
        return Compare(fixture, merged.Load);
    }
}
