using PeftSharp.Merging;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Merging;

/// <summary>
/// NuSLERP, Multi-SLERP, Karcher and NearSwap against their equations written out with plain scalar arithmetic on
/// small tensors (mergekit's nuslerp.py, multislerp.py, karcher.py, nearswap.py).
/// </summary>
public class SphericalMergeTests
{
    static Tensor Rand(long seed, params long[] shape)
    {
        using var g = new Generator((ulong)seed, device: null);
        return randn(shape, generator: g);
    }

    static double[] D(Tensor t) => t.to(ScalarType.Float64).reshape(-1).data<double>().ToArray();
    static double Dot(double[] a, double[] b) => a.Zip(b, (x, y) => x * y).Sum();
    static double Norm(double[] a) => Math.Sqrt(Dot(a, a));
    static Tensor T(double[] values, long[] shape) => tensor(values, dtype: ScalarType.Float64).to(ScalarType.Float32).view(shape);

    // mergekit's nuslerp on one pair of vectors: slerp of the originals by the angle of their directions
    static double[] Slerp(double t, double[] v0, double[] v1)
    {
        double cos = Math.Clamp(Dot(v0, v1) / Math.Max(Norm(v0), 1e-7) / Math.Max(Norm(v1), 1e-7), -1, 1);
        double theta = Math.Acos(cos), sin = Math.Sin(theta);
        if (Math.Abs(sin) < 1e-8) return v0.Zip(v1, (a, b) => (1 - t) * a + t * b).ToArray();
        return v0.Zip(v1, (a, b) => (Math.Sin((1 - t) * theta) * a + Math.Sin(t * theta) * b) / sin).ToArray();
    }

    [Theory]
    [InlineData(true, false)]    // the whole tensor as one vector (the default)
    [InlineData(false, false)]   // each row
    [InlineData(false, true)]    // row_wise: each column (mergekit moves dim 0 last)
    public void Nuslerp_interpolates_by_weight_over_the_chosen_vectors(bool flatten, bool rowWise)
    {
        using var a = Rand(1, 3, 4);
        using var b = Rand(2, 3, 4);
        double[] w = [0.3, 0.9];
        double t = 0.9 / 1.2;
        var x = D(a);
        var y = D(b);
        var expected = new double[12];
        if (flatten) expected = Slerp(t, x, y);
        else if (!rowWise)
            for (int r = 0; r < 3; r++)
                Slerp(t, x[(4 * r)..(4 * r + 4)], y[(4 * r)..(4 * r + 4)]).CopyTo(expected, 4 * r);
        else
            for (int c = 0; c < 4; c++)
            {
                var col = Slerp(t, [x[c], x[4 + c], x[8 + c]], [y[c], y[4 + c], y[8 + c]]);
                for (int r = 0; r < 3; r++) expected[4 * r + c] = col[r];
            }
        using var merged = MergeMath.NuSlerp(null, [a, b], w, rowWise, flatten);
        Numerics.Close(T(expected, [3, 4]), merged, 1e-5);
    }

    [Fact]
    public void Nuslerp_with_a_base_interpolates_the_task_vectors_and_falls_back_to_lerp_when_colinear()
    {
        using var b = Rand(3, 2, 5);
        using var tv = Rand(4, 2, 5);
        using var other = Rand(5, 2, 5);
        using var merged = MergeMath.NuSlerp(b, [b + tv, b + other], [1, 1], rowWise: false, flatten: true);
        Numerics.Close(b + T(Slerp(0.5, D(tv), D(other)), [2, 5]), merged, 1e-5);
        // task vectors tv and 3 tv: no angle, so linear: base + (tv + 3 tv) / 2
        using var colinear = MergeMath.NuSlerp(b, [b + tv, b + tv * 3], [1, 1], rowWise: false, flatten: true);
        Numerics.Close(b + tv * 2, colinear, 1e-5);
    }

    [Theory]
    [InlineData(false, true)]
    [InlineData(true, true)]
    [InlineData(true, false)]
    public void Multislerp_is_the_tangent_space_mean_scaled_by_the_mean_norm(bool withBase, bool normalizeWeights)
    {
        var models = new[] { Rand(6, 3, 4), Rand(7, 3, 4), Rand(8, 3, 4) };
        using var b = Rand(9, 3, 4);
        double[] w = [0.5, 0.3, 0.4];
        var x = models.Select(m => withBase ? D(m - b) : D(m)).ToArray();
        var ws = normalizeWeights ? w.Select(v => v / w.Sum()).ToArray() : w;
        const double eps = 1e-8;
        var norms = x.Select(Norm).ToArray();
        var units = x.Select((v, i) => v.Select(e => e / (norms[i] + eps)).ToArray()).ToArray();
        var mean = Enumerable.Range(0, 12).Select(k => units.Select((u, i) => ws[i] * u[k]).Sum()).ToArray();
        double meanNorm = Norm(mean);
        mean = mean.Select(e => e / meanNorm).ToArray();
        var tangent = Enumerable.Range(0, 12).Select(k => units.Select((u, i) => ws[i] * (u[k] - Dot(u, mean) * mean[k])).Sum()).ToArray();
        double g = Norm(tangent) + eps, scale = norms.Select((n, i) => n * ws[i]).Sum();
        var expected = mean.Select((m, k) => (m * Math.Cos(g) + tangent[k] * Math.Sin(g) / g) * scale).ToArray();
        if (withBase) expected = expected.Zip(D(b), (e, v) => e + v).ToArray();
        using var merged = MergeMath.MultiSlerp(models, w, withBase ? b : null, normalizeWeights);
        Numerics.Close(T(expected, [3, 4]), merged, 1e-5);
    }

    [Fact]
    public void Multislerp_of_two_opposite_models_with_equal_weights_is_their_weighted_sum_and_of_three_is_an_error()
    {
        using var a = Rand(10, 6);
        using var merged = MergeMath.MultiSlerp([a, -a], [1, 1]);
        Numerics.Close(zeros(6), merged, 1e-6);
        var e = Assert.Throws<MergeException>(() => MergeMath.MultiSlerp([a, -a, a * 0], [1, 1, 1], tensorName: "x.weight"));
        Assert.Contains("tensor 'x.weight'", e.Message);
    }

    [Fact]
    public void Karcher_mean_of_two_points_is_the_slerp_midpoint_at_their_mean_norm()
    {
        using var a = Rand(11, 4, 3);
        using var b = Rand(12, 4, 3) * 2;
        var x = D(a);
        var y = D(b);
        var ux = x.Select(e => e / Norm(x)).ToArray();
        var uy = y.Select(e => e / Norm(y)).ToArray();
        var mid = Slerp(0.5, ux, uy);
        double scale = (Norm(x) + Norm(y)) / 2 / Norm(mid);
        using var merged = MergeMath.Karcher([a, b]);
        Numerics.Close(T(mid.Select(e => e * scale).ToArray(), [4, 3]), merged, 1e-5);
    }

    [Fact]
    public void Karcher_mean_of_several_points_is_where_the_log_maps_cancel()
    {
        var models = Enumerable.Range(20, 4).Select(s => Rand(s, 5, 5) + 1).ToList();   // + 1: spread on one side of the sphere
        using var merged = MergeMath.Karcher(models, maxIter: 100, tol: 1e-9);
        var m = D(merged);
        double norm = Norm(m);
        Assert.Equal(models.Select(t => Norm(D(t))).Average(), norm, 4);
        var u = m.Select(e => e / norm).ToArray();
        // the Riemannian gradient sum_i theta_i / sin(theta_i) (u_i - cos(theta_i) u) vanishes at the mean
        var gradient = new double[25];
        foreach (var t in models)
        {
            var ui = D(t).Select(e => e / Norm(D(t))).ToArray();
            double cos = Dot(u, ui), theta = Math.Acos(cos);
            for (int k = 0; k < 25; k++) gradient[k] += theta / Math.Sin(theta) * (ui[k] - cos * u[k]);
        }
        Assert.True(Norm(gradient) < 1e-4, $"|gradient| = {Norm(gradient):g3}");
        // and it is not just the normalised arithmetic mean of the directions
        var arithmetic = Enumerable.Range(0, 25).Select(k => models.Sum(t => D(t)[k] / Norm(D(t)))).ToArray();
        Assert.True(Norm(arithmetic.Select((e, k) => e / Norm(arithmetic) - u[k]).ToArray()) > 1e-4);
    }

    [Fact]
    public void Karcher_leaves_out_zero_models_from_the_direction_but_counts_them_in_the_norm()
    {
        using var a = Rand(30, 8);
        using var merged = MergeMath.Karcher([a, zeros(8)]);
        Numerics.Close(a * 0.5, merged, 1e-6);
    }

    [Fact]
    public void Nearswap_takes_the_other_value_where_it_is_within_t_and_less_of_it_further_away()
    {
        using var b = tensor(new float[] { 0, 0, 0, 1, -2 });
        using var o = tensor(new float[] { 0.05f, 0.5f, -2, 1, 3 });
        using var merged = MergeMath.NearSwap(0.1, b, o);
        // w = clamp(0.1 / max(|b - o|, 1e-6), 0, 1): 1, 0.2, 0.05, 1 (equal), 0.02
        double[] w = [1, 0.2, 0.05, 1, 0.02];
        var expected = w.Select((wi, i) => wi * D(o)[i] + (1 - wi) * D(b)[i]).ToArray();
        Numerics.Close(T(expected, [5]), merged, 1e-6);
    }
}
