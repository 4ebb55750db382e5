using PeftSharp.Merging;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Merging;

/// <summary>DELLA and SCE against their equations on small tensors, and every new method wired through YAML.</summary>
public class NewMergeMethodTests
{
    static Tensor Rand(long seed, params long[] shape)
    {
        using var g = new Generator((ulong)seed, device: null);
        return randn(shape, generator: g);
    }

    static double[] D(Tensor t) => t.to(ScalarType.Float64).reshape(-1).data<double>().ToArray();

    [Fact]
    public void Della_keeps_each_value_with_a_probability_rising_linearly_with_its_magnitude_rank_in_its_row()
    {
        // 4000 rows holding magnitudes 1..5 in rotating places and random signs; density 0.5, epsilon 0.2:
        // keep probabilities 0.3, 0.4, 0.5, 0.6, 0.7 for ranks 1..5 (mergekit: density - eps + 2 eps (r - 1) / (n - 1))
        const int rows = 4000;
        var values = new float[rows * 5];
        var rng = new Random(3);
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < 5; c++)
                values[r * 5 + c] = ((c + r) % 5 + 1) * (rng.Next(2) == 0 ? -1 : 1);
        using var t = tensor(values).view(rows, 5);
        using var g = new Generator(17, device: null);
        using var pruned = MergeMath.DellaPrune(t, 0.5, 0.2, g);
        var kept = D(pruned);
        for (int magnitude = 1; magnitude <= 5; magnitude++)
        {
            var at = Enumerable.Range(0, values.Length).Where(i => Math.Abs(values[i]) == magnitude).ToList();
            Assert.All(at, i => Assert.True(kept[i] == 0 || kept[i] == values[i]));     // kept as is, or dropped
            double rate = at.Count(i => kept[i] != 0) / (double)at.Count;
            Assert.True(Math.Abs(rate - (0.3 + 0.1 * (magnitude - 1))) < 0.03, $"magnitude {magnitude}: kept {rate:F3}");
        }
        // a vector is one row
        using var v = tensor(new float[] { 1, 2, 3 });
        using var g2 = new Generator(1, device: null);
        Assert.Equal([3L], MergeMath.DellaPrune(v, 0.5, 0.1, g2).shape);
        Assert.Throws<ArgumentOutOfRangeException>(() => MergeMath.DellaPrune(v, 0.5, 0.5));
    }

    [Theory]
    [InlineData("della")]
    [InlineData("della_linear")]
    public void Della_is_magprune_then_l1_rescale_then_ties_or_a_weighted_sum(string name)
    {
        var tvs = new[] { Rand(1, 6, 8), Rand(2, 6, 8), Rand(3, 6, 8) };
        double[] w = [1.0, 0.6, 0.3];
        var method = MergeMethods.Get(name);
        // the same seeds give the same masks, drawn here one model at a time
        var pruned = tvs.Select((tv, i) =>
        {
            using var g = new Generator((ulong)(100 + i), device: null);
            return MergeMath.RescaleL1(tv, MergeMath.DellaPrune(tv, 0.4, 0.1, g));
        }).ToList();
        var generators = tvs.Select((_, i) => new Generator((ulong)(100 + i), device: null)).ToList();
        var inputs = tvs.Select((tv, i) => new TaskVectorInput(tv, w[i], 0.4, Generator: generators[i], Epsilon: 0.1)).ToList();
        using var mixed = TaskVectorMerge.Mix(method, inputs, new TaskVectorOptions(Normalize: name == "della", Rescale: true));
        foreach (var g in generators) g.Dispose();

        var weighted = stack(pruned.Select((p, i) => p * w[i]).ToList());
        Tensor expected;
        if (name == "della")
        {
            // sign elected on the weighted sum; agreeing values summed and divided by the sum of their weights
            var agree = weighted.sign().eq(where(weighted.sum(dim: 0) >= 0, 1f, -1f)).to(ScalarType.Float32);
            var divisor = (agree * tensor(w, dtype: ScalarType.Float32).view(3, 1, 1)).sum(dim: 0);
            expected = (weighted * agree).sum(dim: 0) / divisor.masked_fill(divisor.eq(0), 1);
        }
        else expected = weighted.sum(dim: 0);
        Numerics.Close(expected, mixed, 1e-5);
        // the pruning did something: about 60% of the values are gone
        double zeros = pruned.Sum(p => p.eq(0).sum().item<long>()) / (3.0 * 48);
        Assert.InRange(zeros, 0.45, 0.75);
    }

    [Fact]
    public void Sce_selects_by_variance_weights_by_energy_and_erases_minority_signs()
    {
        var models = new[] { Rand(4, 3, 4), Rand(5, 3, 4), Rand(6, 3, 4) };
        using var b = Rand(7, 3, 4);
        var tv = models.Select(m => D(m - b)).ToArray();
        const int n = 12;
        // select: the int(0.5 * 12) = 6 positions whose variance across the models (population) is largest
        var variance = Enumerable.Range(0, n).Select(k =>
        {
            double mean = tv.Average(v => v[k]);
            return tv.Average(v => (v[k] - mean) * (v[k] - mean));
        }).ToArray();
        var selected = Enumerable.Range(0, n).OrderByDescending(k => variance[k]).Take(6).ToHashSet();
        var masked = tv.Select(v => v.Select((e, k) => selected.Contains(k) ? e : 0).ToArray()).ToArray();
        // calculate: c_i = mean(tau_i^2) / sum_j mean(tau_j^2)
        var energy = masked.Select(v => v.Average(e => e * e)).ToArray();
        var c = energy.Select(e => e / energy.Sum()).ToArray();
        // erase: keep the values whose sign is that of the sum; divide by the coefficients kept
        var expected = new double[n];
        for (int k = 0; k < n; k++)
        {
            double sign = masked.Sum(v => v[k]) >= 0 ? 1 : -1, sum = 0, kept = 0;
            for (int i = 0; i < 3; i++)
                if (Math.Sign(masked[i][k]) == sign) { sum += c[i] * masked[i][k]; kept += c[i]; }
            expected[k] = D(b)[k] + sum / Math.Max(kept, 1e-6);
        }
        using var merged = MergeMath.Sce(b, models, 0.5);
        Numerics.Close(tensor(expected, dtype: ScalarType.Float64).to(ScalarType.Float32).view(3, 4), merged, 1e-5);
        // positions not selected get no change
        var changed = D(merged - b);
        Assert.Equal(6, changed.Count(e => e != 0));
    }

    readonly string dir = TestDirs.New();

    [Theory]
    [InlineData("sce", "parameters: {select_topk: 0.5}", "[a, b, c]")]
    [InlineData("nearswap", "parameters: {t: 0.3}", "[a]")]
    [InlineData("nuslerp", "parameters: {nuslerp_flatten: false}\nmodels:\n  - {model: a, parameters: {weight: 0.2}}\n  - {model: b, parameters: {weight: 0.6}}", "")]
    [InlineData("nuslerp_nobase", "parameters: {nuslerp_row_wise: true, nuslerp_flatten: false}\nmodels:\n  - {model: a, parameters: {weight: 0.2}}\n  - {model: b, parameters: {weight: 0.6}}", "")]
    [InlineData("multislerp", "parameters: {weight: [0.2, 1]}", "[a, b, c]")]
    [InlineData("multislerp_nobase", "parameters: {weight: 0.5}", "[a, b, c]")]
    [InlineData("karcher", "parameters: {max_iter: 5}", "[a, b]")]
    [InlineData("karcher_nobase", "", "[a, b, c]")]
    [InlineData("della", "parameters: {weight: 0.5, density: 0.6, epsilon: 0.2}", "[a, b]")]
    [InlineData("pcb", "parameters: {pcb_ratio: 0.3}\nmodels:\n  - {model: a, parameters: {weight: 1.2}}\n  - {model: b, parameters: {weight: 0.7}}", "")]
    public void New_methods_run_through_yaml_as_their_functions(string method, string parameters, string models)
    {
        foreach (var (m, seed) in new[] { ("base", 1), ("a", 2), ("b", 3), ("c", 4) }) TinyModels.Write(dir, m, seed);
        string name = method.Replace("_nobase", "");
        bool withBase = !method.EndsWith("_nobase", StringComparison.Ordinal);
        var yaml = $"merge_method: {name}\n{(withBase ? "base_model: base\n" : "")}{parameters}\n" + (models == "" ? "" : $"models: {models}\n");
        var result = ModelMerger.Run(MergeConfigYaml.Parse(yaml) with { BaseDirectory = dir }, Path.Combine(dir, "out"), new MergeOptions { RandomSeed = 3 });
        Assert.Empty(result.Warnings);
        var t = new[] { "base", "a", "b", "c" }.ToDictionary(m => m, m => TinyModels.Read(Path.Combine(dir, m)));
        var outT = TinyModels.Read(Path.Combine(dir, "out"));
        var depth = new LayerDepth(3);
        foreach (var (n, merged) in outT)
        {
            double d = depth.Of(n);
            Tensor b = t["base"][n], a = t["a"][n], bb = t["b"][n], c = t["c"][n];
            Tensor? expected = name switch
            {
                "sce" => MergeMath.Sce(b, [a, bb, c], 0.5),
                "nearswap" => MergeMath.NearSwap(0.3, b, a),
                "nuslerp" => MergeMath.NuSlerp(withBase ? b : null, [a, bb], [0.2, 0.6], rowWise: !withBase, flatten: false),
                "multislerp" => MergeMath.MultiSlerp([a, bb, c], withBase ? [0.2 + 0.8 * d, 0.2 + 0.8 * d, 0.2 + 0.8 * d] : [0.5, 0.5, 0.5], withBase ? b : null),
                "pcb" => b + MergeMath.Pcb([a - b, bb - b], [1.2, 0.7], 0.3),
                "karcher" => withBase ? MergeMath.Karcher([b, a, bb], maxIter: 5) : MergeMath.Karcher([a, bb, c]),
                _ => null,
            };
            if (expected is not null) Numerics.Close(expected, merged, 1e-5, n);
            else Assert.True(merged.isfinite().all().item<bool>(), n);
        }
    }

    [Fact]
    public void Della_is_reproducible_per_seed_and_an_epsilon_too_wide_for_the_density_names_the_model_and_tensor()
    {
        foreach (var (m, seed) in new[] { ("base", 1), ("a", 2), ("b", 3) }) TinyModels.Write(dir, m, seed);
        MergeResult Run(string yaml, long seed, string outName) =>
            ModelMerger.Run(MergeConfigYaml.Parse(yaml) with { BaseDirectory = dir }, Path.Combine(dir, outName), new MergeOptions { RandomSeed = seed });
        const string yaml = "merge_method: della\nbase_model: base\nparameters: {weight: 0.5, density: 0.5, epsilon: 0.1}\nmodels: [a, b]";
        Run(yaml, 5, "one");
        Run(yaml, 5, "two");
        Run(yaml, 6, "three");
        var one = TinyModels.Read(Path.Combine(dir, "one"));
        var two = TinyModels.Read(Path.Combine(dir, "two"));
        var three = TinyModels.Read(Path.Combine(dir, "three"));
        Assert.All(one, kv => Assert.True(Numerics.Same(kv.Value, two[kv.Key]), kv.Key));
        Assert.Contains(one, kv => !Numerics.Same(kv.Value, three[kv.Key]));

        var e = Assert.Throws<MergeException>(() => Run(yaml.Replace("epsilon: 0.1", "epsilon: 0.5"), 5, "bad"));
        Assert.Contains("della, model 'a', tensor 'model.embed_tokens.weight': density 0.5 +/- epsilon 0.5 must stay inside (0, 1)", e.Message);
    }

    [Theory]
    [InlineData("merge_method: nuslerp\nbase_model: base\nparameters: {weight: 1}\nmodels: [a]", "merge_method 'nuslerp' needs exactly two models besides base_model (which is optional); got 1")]
    [InlineData("merge_method: nearswap\nbase_model: base\nparameters: {t: 1}\nmodels: [a, b]", "merge_method 'nearswap' needs exactly one model besides base_model; got 2")]
    [InlineData("merge_method: nearswap\nparameters: {t: 1}\nmodels: [a]", "merge_method 'nearswap' needs base_model")]
    [InlineData("merge_method: sce\nmodels: [a, b]", "merge_method 'sce' needs base_model")]
    [InlineData("merge_method: multislerp\nmodels: [a, b]", "parameter 'weight' is required for model 'a'")]
    public void New_methods_say_what_they_need(string yaml, string message)
    {
        foreach (var (m, seed) in new[] { ("base", 1), ("a", 2), ("b", 3) }) TinyModels.Write(dir, m, seed);
        var e = Assert.Throws<MergeException>(() => ModelMerger.Run(MergeConfigYaml.Parse(yaml) with { BaseDirectory = dir }, Path.Combine(dir, "out")));
        Assert.Contains(message, e.Message);
    }
}
