using PeftSharp.Merging;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Merging;

/// <summary>Properties of the merge functions that hold whatever the numbers, and small cases worked by hand.</summary>
public class MergeMathTests
{
    static List<Tensor> TaskVectors(int n = 3, long seed = 7)
    {
        using var g = new Generator((ulong)seed, device: null);
        return Enumerable.Range(0, n).Select(_ => randn(new long[] { 16, 24 }, generator: g)).ToList();
    }

    static readonly double[] W = [1.0, 0.6, 0.3];

    [Fact]
    public void Magnitude_prune_keeps_the_largest_fraction()
    {
        using var t = tensor(new float[] { 0.1f, -5f, 3f, -0.2f, 4f, 0f, 1f, -2f, 0.5f, 6f });
        using var p = MergeMath.MagnitudePrune(t, 0.4);
        Assert.Equal(new float[] { 0, -5, 3, 0, 4, 0, 0, 0, 0, 6 }, p.data<float>().ToArray());
    }

    [Fact]
    public void Pruning_keeps_exactly_k_values_when_magnitudes_tie()
    {
        using var t = tensor(new float[] { 1, -1, 1, 1, 0.5f, -1, 2, 0 });
        // int(0.5 * 8) = 4: the 2, then the first three of the five tied ones
        Assert.Equal(new float[] { 1, -1, 1, 0, 0, 0, 2, 0 }, MergeMath.MagnitudePrune(t, 0.5).data<float>().ToArray());
        // keep 4 after dropping the top 1 (the 2): four of the tied ones, again the first in memory order
        Assert.Equal(new float[] { 1, -1, 1, 1, 0, 0, 0, 0 }, MergeMath.BreadcrumbsPrune(t, 0.5, 0.125).data<float>().ToArray());
    }

    [Theory]
    [InlineData(0.5, "normal")]
    [InlineData(0.01, "normal")]
    [InlineData(0.999, "normal")]
    [InlineData(0.3, "quantised")]
    [InlineData(0.3, "strided")]
    public void Pruning_large_tensors_keeps_what_topk_keeps(double density, string kind)
    {
        // Large enough for the sampled threshold search. Quantised values tie a lot; "strided" puts the largest values
        // exactly where the strided sample looks, so its bracket is wrong and the full selection must take over.
        using var g = new Generator(11, device: null);
        using var normal = randn(new long[] { 700, 500 }, generator: g);
        using var t = kind switch
        {
            "quantised" => (normal * 8).round() / 8,
            "strided" => normal.reshape(-1).index_fill(0, arange(0, normal.numel(), normal.numel() / 32_768), 100).view(700, 500),
            _ => normal.clone(),
        };
        int k = (int)(density * t.numel());
        using var pruned = MergeMath.MagnitudePrune(t, density);
        Assert.Equal(k, pruned.ne(0).count_nonzero().item<long>());
        var (values, _) = t.abs().reshape(-1).topk(k);
        float threshold = values[k - 1].item<float>();
        // every kept magnitude is at least the k-th largest, every dropped one at most
        Assert.True(t.abs().masked_select(pruned.ne(0)).min().item<float>() >= threshold);
        Assert.True(t.abs().masked_select(pruned.eq(0)).max().item<float>() <= threshold);
        if (kind == "normal") Assert.True(Numerics.Same(pruned, t * t.abs().ge(threshold)));
    }

    [Fact]
    public void Breadcrumbs_drop_the_largest_and_the_smallest()
    {
        using var t = tensor(new float[] { 0.1f, -5f, 3f, -0.2f, 4f, 0.05f, 1f, -2f, 0.5f, 6f });
        // keep int(0.5 * 10) = 5 values after dropping int(0.1 * 10) = 1 outlier (6): ranks 5..9 by |x| without the top one.
        using var p = MergeMath.BreadcrumbsPrune(t, 0.5, 0.1);
        Assert.Equal(new float[] { 0, -5, 3, 0, 4, 0, 1, -2, 0, 0 }, p.data<float>().ToArray());
    }

    [Fact]
    public void Breadcrumbs_with_nothing_dropped_equal_task_arithmetic()
    {
        var tvs = TaskVectors();
        var expected = MergeMath.TaskArithmetic(tvs, W);
        foreach (var gamma in new[] { 0.0, 0.01, 0.3 })
        {
            var inputs = tvs.Zip(W, (t, w) => new TaskVectorInput(t, w, Density: 1.0, Gamma: gamma)).ToList();
            using var merged = TaskVectorMerge.Mix(MergeMethods.Get("breadcrumbs"), inputs, new TaskVectorOptions(false, false));
            Assert.True(Numerics.Same(expected, merged), $"gamma {gamma}");
        }
        // density 1 - gamma with gamma = 0 also drops nothing, through the sort path rather than the early return.
        using var kept = MergeMath.BreadcrumbsPrune(tvs[0], 0.9999999, 0);
        Assert.Equal(tvs[0].numel() - 1, kept.count_nonzero().item<long>());
    }

    [Fact]
    public void Dare_with_drop_rate_zero_equals_task_arithmetic()
    {
        var tvs = TaskVectors();
        var expected = MergeMath.TaskArithmetic(tvs, W);
        using var g = new Generator(1, device: null);
        Assert.True(Numerics.Same(expected, MergeMath.DareLinear(tvs, W, density: 1.0, g)));
        var inputs = tvs.Zip(W, (t, w) => new TaskVectorInput(t, w, Density: 1.0, Generator: g)).ToList();
        using var merged = TaskVectorMerge.Mix(MergeMethods.Get("dare_linear"), inputs, new TaskVectorOptions(false, true));
        Assert.True(Numerics.Same(expected, merged));
    }

    [Fact]
    public void Dare_is_reproducible_per_seed_and_differs_across_seeds()
    {
        var t = TaskVectors(1)[0];
        Tensor Prune(ulong seed)
        {
            using var g = new Generator(seed, device: null);
            return MergeMath.RandomPrune(t, 0.3, rescale: true, g);
        }
        using var a = Prune(42);
        using var b = Prune(42);
        using var c = Prune(43);
        Assert.True(Numerics.Same(a, b));
        Assert.False(Numerics.Same(a, c));
        // survivors are rescaled by 1/density, about density of the values survive
        using var kept = a.ne(0);
        Numerics.Close(t.masked_select(kept) / 0.3, a.masked_select(kept), 1e-6);
        Assert.InRange(kept.sum().item<long>() / (double)t.numel(), 0.2, 0.4);
    }

    [Fact]
    public void Peft_ties_elects_on_unweighted_values_and_divides_by_count()
    {
        // one parameter, three models: values 1, -3, 1 with weights 1, 0.2, 1
        var tvs = new[] { 1f, -3f, 1f }.Select(v => tensor(new[] { v })).ToList();
        double[] w = [1.0, 0.2, 1.0];
        // unweighted sum -1 elects '-': only -3 * 0.2 survives, divided by count 1
        Assert.Equal(-0.6f, MergeMath.Ties(tvs, w, 1.0, SignMethod.Total).item<float>(), 6);
        // by frequency '+' wins: (1 + 1) / 2
        Assert.Equal(1f, MergeMath.Ties(tvs, w, 1.0, SignMethod.Frequency).item<float>(), 6);

        // mergekit: weighted sum 1 - 0.6 + 1 elects '+': (1 + 1) / (1 + 1) with normalize, 2 without
        var inputs = tvs.Zip(w, (t, wi) => new TaskVectorInput(t, wi)).ToList();
        var ties = MergeMethods.Get("ties");
        Assert.Equal(1f, TaskVectorMerge.Mix(ties, inputs, new TaskVectorOptions(true, false)).item<float>(), 6);
        Assert.Equal(2f, TaskVectorMerge.Mix(ties, inputs, new TaskVectorOptions(false, false)).item<float>(), 6);
        Assert.Equal(-0.6f, TaskVectorMerge.Mix(ties, inputs, new TaskVectorOptions(true, false, Convention: TiesConvention.Peft)).item<float>(), 6);
    }

    [Fact]
    public void Mergekit_normalised_ties_divides_by_the_sum_of_agreeing_weights()
    {
        var tvs = new[] { 2f, 4f, -1f }.Select(v => tensor(new[] { v })).ToList();
        double[] w = [0.5, 0.25, 1.0];
        var inputs = tvs.Zip(w, (t, wi) => new TaskVectorInput(t, wi)).ToList();
        // weighted 1, 1, -1: '+' agrees for the first two: (1 + 1) / (0.5 + 0.25)
        using var m = TaskVectorMerge.Mix(MergeMethods.Get("ties"), inputs, new TaskVectorOptions(true, false));
        Assert.Equal(2f / 0.75f, m.item<float>(), 5);
        // PEFT divides by the count instead: (1 + 1) / 2
        using var p = MergeMath.Ties(tvs, w, 1.0);
        Assert.Equal(1f, p.item<float>(), 6);
    }

    [Fact]
    public void Slerp_returns_the_endpoints_and_keeps_equal_norms()
    {
        using var g = new Generator(3, device: null);
        var v0 = randn(new long[] { 32, 8 }, generator: g);
        var v1 = randn(new long[] { 32, 8 }, generator: g);
        v1 = v1 * (v0.norm().item<float>() / v1.norm().item<float>());
        Numerics.Close(v0, MergeMath.Slerp(0, v0, v1), 1e-6, "t=0");
        Numerics.Close(v1, MergeMath.Slerp(1, v0, v1), 1e-6, "t=1");
        double n0 = v0.norm().item<float>();
        foreach (var t in new[] { 0.1, 0.25, 0.5, 0.9 })
        {
            using var s = MergeMath.Slerp(t, v0, v1);
            Assert.Equal(n0, s.norm().item<float>(), 3);
            using var lerp = v0 * (1 - t) + v1 * t;
            Assert.True(lerp.norm().item<float>() < n0 - 0.1, "lerp shrinks the norm where slerp does not");
        }
        // nearly parallel vectors fall back to lerp
        using var close = v0 * 1.0001f;
        Numerics.Close(v0 * 0.5 + close * 0.5, MergeMath.Slerp(0.5, v0, close), 1e-6);
    }

    [Fact]
    public void Model_stock_of_orthogonal_offsets_stays_near_the_base_and_of_equal_ones_takes_them()
    {
        var w0 = zeros(4);
        var a = tensor(new float[] { 1, 0, 0, 0 });
        var b = tensor(new float[] { 0, 1, 0, 0 });
        // cos = 0: t = 0, the base
        Numerics.Close(w0, MergeMath.ModelStock(w0, [a, b]), 1e-6);
        // identical offsets: cos = 1, t = 2 / 2 = 1, their average
        Numerics.Close(a, MergeMath.ModelStock(w0, [a, a.clone()]), 1e-6);
        // cos = 0.5 for two models: t = 1 / 1.5
        var c = tensor(new float[] { 0.5f, (float)Math.Sqrt(0.75), 0, 0 });
        Numerics.Close((a + c) / 2 * (2 * 0.5 / 1.5), MergeMath.ModelStock(w0, [a, c]), 1e-6);
    }

    [Fact]
    public void Lines_with_equal_factors_is_plain_scaling()
    {
        var tvs = TaskVectors();
        using var merged = MergeMath.TaskArithmetic(tvs, W);
        foreach (var depth in new[] { 0.0, 0.5, 1.0 })
            Assert.True(Numerics.Same(merged * 0.7, MergeMath.LinesScale(merged, depth, alpha: 0.7, beta: 0)));
        Assert.Equal(0.2 + 0.8 * 0.25, MergeMath.LinesFactor(0.25, 0.2, 0.8), 12);
    }

    [Fact]
    public void Sign_election_breaks_ties_towards_plus()
    {
        using var stacked = tensor(new float[] { 1, -1, 2, -2 }).view(2, 2);   // columns: (1, 2) and (-1, -2)
        Assert.Equal(new float[] { 1, -1 }, MergeMath.ElectSign(stacked, SignMethod.Total).data<float>().ToArray());
        using var tie = tensor(new float[] { 1, -1 }).view(2, 1);
        Assert.Equal(1f, MergeMath.ElectSign(tie, SignMethod.Total).item<float>());
        Assert.Equal(1f, MergeMath.ElectSign(tie, SignMethod.Frequency).item<float>());
    }
}
