using static TorchSharp.torch;

namespace PeftSharp.Merging;

public static partial class MergeMath
{
    /// <summary>
    /// PCB-Merging (Parameter Competition Balancing, https://arxiv.org/abs/2410.02396) for one tensor, as the authors'
    /// <c>PCB_merge</c> (pcb-merging.py) computes it on the task vectors flattened to rows <c>x_i</c> [n, d]:
    /// magnitudes clipped per row to their 0.01% and 99.99% quantiles (<c>c_i = sign(x_i) clip|x_i|</c>);
    /// intra-balancing <c>exp(n * minmax(clip|x_i|)^2)</c> times inter-balancing <c>tanh(x_i * sum_j x_j)</c> gives each
    /// value a score; per row, scores below the <c>1 - ratio</c> quantile are raised to it and the row is min-max
    /// normalised, so only the top <paramref name="ratio"/> fraction keeps a score <c>s_i</c> &gt; 0; the result is
    /// <c>sum_i lambda_i s_i c_i / max(sum_i s_i, 1e-12)</c>. A row whose values are all equal normalises to 0 (the
    /// reference divides 0 by 0).
    /// </summary>
    public static Tensor Pcb(IReadOnlyList<Tensor> taskVectors, IReadOnlyList<double> lambdas, double ratio = 0.1)
    {
        if (taskVectors.Count == 0 || taskVectors.Count != lambdas.Count)
            throw new ArgumentException($"{lambdas.Count} weights for {taskVectors.Count} task vectors");
        if (ratio <= 0 || ratio > 1) throw new ArgumentOutOfRangeException(nameof(ratio), ratio, "pcb_ratio is the fraction kept: it must be in (0, 1]");
        using var scope = NewDisposeScope();
        int n = taskVectors.Count;
        var shape = taskVectors[0].shape;
        var x = stack(taskVectors.Select(t => t.reshape(-1)).ToList());          // [n, d]
        var magnitude = ClampQuantiles(x.abs(), 0.0001, 0.0001);
        var clipped = x.sign() * magnitude;
        var intra = MinMax(magnitude).pow_(2).mul_(n).exp_();
        var inter = (x * x.sum(dim: 0)).tanh_();
        var scores = MinMax(ClampQuantiles(intra.mul_(inter), 1 - ratio, 0));
        var lambda = tensor(lambdas.ToArray(), dtype: x.dtype).view(n, 1);
        var merged = (clipped * lambda * scores).sum(dim: 0) / scores.sum(dim: 0).clamp_min(1e-12);
        return merged.view(shape).MoveToOuterDisposeScope();
    }

    // The reference's clamp: per row, to the values at sorted indices int(d * low) and int(d * (1 - high) - 1).
    static Tensor ClampQuantiles(Tensor rows, double low, double high)
    {
        long d = rows.shape[1];
        var (sorted, indices) = rows.sort(dim: 1);
        indices.Dispose();
        long lo = Math.Clamp((long)(d * low), 0, d - 1), hi = Math.Clamp((long)(d * (1 - high) - 1), 0, d - 1);
        using var min = sorted.narrow(1, lo, 1).clone();
        using var max = sorted.narrow(1, hi, 1).clone();
        sorted.Dispose();
        return rows.clamp(min, max);
    }

    // (x - min) / (max - min) per row; 0 where a row is constant.
    static Tensor MinMax(Tensor rows)
    {
        var min = rows.min(1, keepdim: true).values;
        var range = rows.max(1, keepdim: true).values - min;
        return (rows - min) / range.masked_fill(range.eq(0), 1);
    }
}
