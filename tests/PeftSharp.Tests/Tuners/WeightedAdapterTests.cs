using System.Text.Json;
using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tuners;

/// <summary>add_weighted_adapter against PEFT: two LoRA adapters on tiny-llama, weights [0.7, 0.5].</summary>
[Collection(SerialRng.Name)]
public class WeightedAdapterTests
{
    static PeftModel TwoAdapters()
    {
        var pm = PeftModel.FromPretrained(AutoModel.Load(Repo.Fixture("models", "tiny-llama")), Repo.Fixture("combine", "a"), "a");
        pm.LoadAdapter(Repo.Fixture("combine", "b"), "b");
        return pm;
    }

    static Dictionary<string, Tensor> Deltas(PeftModel pm, string adapter) =>
        pm.TunerLayers().Select(x => (x.Path, L: (LoraLayer)x.Layer)).Where(x => x.L.Book.Names.Contains(adapter))
            .ToDictionary(x => x.Path, x => x.L.LoraProduct(adapter) * x.L.Scaling(adapter));

    [Theory]
    [InlineData("linear")]
    [InlineData("cat")]
    [InlineData("svd")]
    [InlineData("ties")]
    [InlineData("magnitude_prune")]
    [InlineData("ties_svd")]
    public void Combined_delta_matches_peft(string type)
    {
        using var scope = NewDisposeScope();
        var kwargs = JsonDocument.Parse(File.ReadAllText(Repo.Fixture("combine", "case.json"))).RootElement.GetProperty("kwargs");
        double density = kwargs.TryGetProperty(type, out var k) && k.TryGetProperty("density", out var d) ? d.GetDouble() : 1.0;
        int? svdRank = kwargs.TryGetProperty(type, out var k2) && k2.TryGetProperty("svd_rank", out var r) ? r.GetInt32() : null;
        var pm = TwoAdapters();
        pm.AddWeightedAdapter(["a", "b"], [0.7, 0.5], "m", type, svdRank, density);
        using var expected = SafetensorsFile.Open(Repo.Fixture("combine", "expected_delta.safetensors"));
        var ours = Deltas(pm, "m");
        int compared = 0;
        foreach (var key in expected.Names.Where(n => n.StartsWith(type + "|")))
        {
            var path = key[(type.Length + 1)..].Replace("base_model.model.", "");
            Numerics.Close(expected.Load(key), ours[path], 1e-4, key);
            compared++;
        }
        Assert.True(compared >= 4, $"{compared} modules compared for {type}");
    }

    [Fact]
    public void Dare_is_reproducible_per_seed_and_density_1_equals_linear()
    {
        using var scope = NewDisposeScope();
        var pm = TwoAdapters();
        pm.AddWeightedAdapter(["a", "b"], [0.7, 0.5], "lin", "linear");
        pm.AddWeightedAdapter(["a", "b"], [0.7, 0.5], "d1", "dare_linear", density: 1.0, seed: 3);
        pm.AddWeightedAdapter(["a", "b"], [0.7, 0.5], "s1", "dare_ties", density: 0.5, seed: 3);
        pm.AddWeightedAdapter(["a", "b"], [0.7, 0.5], "s2", "dare_ties", density: 0.5, seed: 3);
        pm.AddWeightedAdapter(["a", "b"], [0.7, 0.5], "s3", "dare_ties", density: 0.5, seed: 4);
        var (lin, d1, s1, s2, s3) = (Deltas(pm, "lin"), Deltas(pm, "d1"), Deltas(pm, "s1"), Deltas(pm, "s2"), Deltas(pm, "s3"));
        foreach (var path in lin.Keys)
        {
            Numerics.Close(lin[path], d1[path], 1e-6, path);
            Assert.True(Numerics.Same(s1[path], s2[path]), path);
        }
        Assert.Contains(lin.Keys, p => Numerics.MaxAbsDiff(s1[p], s3[p]) > 1e-6);
    }
}
