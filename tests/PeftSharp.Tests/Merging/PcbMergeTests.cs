using PeftSharp.Merging;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Merging;

/// <summary>PCB-Merging against the authors' PCB_merge (pcb-merging.py) written out in scalar arithmetic.</summary>
public class PcbMergeTests
{
    static double[] Sorted(IEnumerable<double> v) => v.OrderBy(e => e).ToArray();

    // the reference's clamp of one row: to sorted[int(d * low)] .. sorted[int(d * (1 - high) - 1)]
    static double[] Clamp(double[] row, double low, double high)
    {
        var s = Sorted(row);
        double lo = s[(int)(row.Length * low)], hi = s[(int)(row.Length * (1 - high) - 1)];
        return row.Select(e => Math.Min(Math.Max(e, lo), hi)).ToArray();
    }

    static double[] MinMax(double[] row) => row.Select(e => (e - row.Min()) / (row.Max() - row.Min())).ToArray();

    [Theory]
    [InlineData(0.25)]
    [InlineData(0.5)]
    public void Pcb_is_intra_times_inter_balancing_kept_at_the_top_ratio_then_a_weighted_average(double ratio)
    {
        using var g = new Generator(5, device: null);
        var tvs = Enumerable.Range(0, 3).Select(_ => randn(new long[] { 3, 4 }, generator: g)).ToList();
        double[] lambdas = [1.2, 0.8, 1.0];
        var x = tvs.Select(t => t.to(ScalarType.Float64).reshape(-1).data<double>().ToArray()).ToArray();
        int n = 3, d = 12;
        var magnitude = x.Select(r => Clamp(r.Select(Math.Abs).ToArray(), 0.0001, 0.0001)).ToArray();
        var clipped = x.Select((r, i) => r.Select((e, k) => Math.Sign(e) * magnitude[i][k]).ToArray()).ToArray();
        var column = Enumerable.Range(0, d).Select(k => x.Sum(r => r[k])).ToArray();
        var scores = x.Select((r, i) =>
        {
            var intra = MinMax(magnitude[i]).Select(e => Math.Exp(n * e * e)).ToArray();
            var balanced = r.Select((e, k) => intra[k] * Math.Tanh(e * column[k])).ToArray();
            return MinMax(Clamp(balanced, 1 - ratio, 0));
        }).ToArray();
        var expected = Enumerable.Range(0, d).Select(k =>
            Enumerable.Range(0, n).Sum(i => lambdas[i] * scores[i][k] * clipped[i][k]) / Math.Max(scores.Sum(s => s[k]), 1e-12)).ToArray();

        using var merged = MergeMath.Pcb(tvs, lambdas, ratio);
        Numerics.Close(tensor(expected, dtype: ScalarType.Float64).to(ScalarType.Float32).view(3, 4), merged, 1e-5);
        // each model scores only its top `ratio` of values (the rest are raised to the quantile, then normalised to 0)
        foreach (var s in scores) Assert.True(s.Count(e => e > 0) <= d - (int)(d * (1 - ratio)));
        // small tensors: the 99.99% clip already lowers the largest magnitude to the second largest, as in the reference
        Assert.Equal(Sorted(magnitude[0])[^2], Sorted(magnitude[0])[^1]);
    }

    [Fact]
    public void Pcb_of_zero_task_vectors_is_zero_not_nan()
    {
        using var merged = MergeMath.Pcb([zeros(3, 4), zeros(3, 4)], [1, 1]);
        Assert.Equal(0, merged.abs().sum().item<float>());
    }
}
