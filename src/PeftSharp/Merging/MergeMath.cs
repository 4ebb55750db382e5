using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Merging;

/// <summary>How TIES elects the sign of each parameter across task vectors.</summary>
public enum SignMethod
{
    /// <summary>The sign of the sum of the values (TIES paper; mergekit's <c>sum</c>).</summary>
    Total,
    /// <summary>The sign held by more task vectors (mergekit's <c>count</c>).</summary>
    Frequency,
}

/// <summary>
/// Task-vector merge maths as plain functions over tensors, after PEFT's <c>merge_utils</c> and mergekit's
/// sparsification. A task vector is <c>fine_tuned - base</c> of one parameter; several are stacked on dimension 0
/// (<c>stacked [n, ...]</c>). Inputs are never modified; every result is a new tensor owned by the caller.
/// </summary>
public static partial class MergeMath
{
    /// <summary>
    /// Keeps the <c>int(density * numel)</c> largest magnitudes of <paramref name="t"/> and zeroes the rest
    /// (TIES, https://arxiv.org/abs/2306.01708, "trim"), as PEFT's <c>torch.topk</c> does. Among values tied at the
    /// threshold, the first ones in memory order are kept (topk leaves that choice unspecified).
    /// </summary>
    public static Tensor MagnitudePrune(Tensor t, double density)
    {
        CheckDensity(density);
        if (density >= 1) return t.clone();
        using var scope = NewDisposeScope();
        var magnitude = t.reshape(-1).abs();
        var mask = LargestMask(magnitude, KeepCount(magnitude.numel(), density));
        return (t * mask.view(t.shape)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// DARE (https://arxiv.org/abs/2311.03099): keeps each value with probability <paramref name="density"/>,
    /// and with <paramref name="rescale"/> divides the survivors by it so the expectation is unchanged:
    /// <c>m ~ Bernoulli(p); t' = m * t / p</c>. Density 0 gives zeros (PEFT would divide 0 by 0).
    /// </summary>
    public static Tensor RandomPrune(Tensor t, double density, bool rescale, Generator? generator = null)
    {
        CheckDensity(density);
        if (density >= 1) return t.clone();
        if (density == 0) return zeros_like(t);
        using var scope = NewDisposeScope();
        // Bernoulli sampling is float32 on CPU whatever the tensor's dtype (half is not implemented there).
        var mask = empty(t.shape, ScalarType.Float32).bernoulli_(density, generator).to(t.dtype);
        var pruned = t * mask;
        if (rescale) pruned.div_(density);
        return pruned.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Model Breadcrumbs (https://arxiv.org/abs/2312.06795): drops the <c>int(gamma * numel)</c> largest magnitudes
    /// (outliers) and then the smallest ones, so that <c>int(density * numel)</c> values remain. When density
    /// and gamma together ask for more than the tensor holds, fewer outliers are dropped, as in mergekit.
    /// </summary>
    public static Tensor BreadcrumbsPrune(Tensor t, double density, double gamma)
    {
        CheckDensity(density);
        if (gamma < 0 || gamma > 1) throw new ArgumentOutOfRangeException(nameof(gamma), gamma, "gamma must be in [0, 1]");
        if (density >= 1) return t.clone();
        using var scope = NewDisposeScope();
        var flat = t.reshape(-1);
        long n = flat.numel(), keep = KeepCount(n, density), top = (long)(gamma * n), bottom = n - keep - top;
        if (bottom < 0) { top += bottom; bottom = 0; }
        // Keep ranks [bottom, n - top) by ascending magnitude, `keep` values: the n - bottom largest without the top
        // largest. (mergekit slices sorted[bottom:-top], which is empty when top == 0; we keep what was meant.)
        var magnitude = flat.abs();
        var mask = LargestMask(magnitude, n - bottom).logical_and_(LargestMask(magnitude, top).logical_not_());
        return (t * mask.view(t.shape)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// DELLA's MagPrune (https://arxiv.org/abs/2406.11617) as mergekit computes it: within each row (a vector is one
    /// row), the value of ascending-magnitude rank r of n is kept with probability
    /// <c>p_r = density - epsilon + 2 epsilon (r - 1) / (n - 1)</c>, so larger values are likelier to survive and the
    /// mean keep rate is <paramref name="density"/>. No rescaling here (mergekit's della rescales the L1 norm, see
    /// <see cref="RescaleL1"/>). A row of one value is kept with probability density (mergekit: 0/0).
    /// Ties in magnitude rank in memory order.
    /// </summary>
    public static Tensor DellaPrune(Tensor t, double density, double epsilon, Generator? generator = null)
    {
        CheckDensity(density);
        if (density >= 1) return t.clone();
        if (density <= 0) return zeros_like(t);
        if (density - epsilon <= 0 || density + epsilon >= 1)
            throw new ArgumentOutOfRangeException(nameof(epsilon), epsilon, $"density {density} +/- epsilon must stay inside (0, 1)");
        var rows = t.dim() < 2 ? t.unsqueeze(0) : t;
        long n = rows.shape[1], chunk = Math.Max(1, (1L << 18) / n);
        var result = empty_like(rows);
        // Rows are independent: a block of rows at a time bounds the rank temporaries (int64 indices) to a few MB
        // (a quarter million values: ~7 MB in all, well under one 8 MB tensor of the streamed memory test).
        for (long start = 0; start < rows.shape[0]; start += chunk)
        {
            using var scope = NewDisposeScope();
            var block = rows.narrow(0, start, Math.Min(chunk, rows.shape[0] - start));
            // rank of each value within its row, 0 for the smallest magnitude (a stable sort: ties keep memory order)
            var order = block.abs().sort(dim: 1, stable: true).Indices;
            var positions = arange(n, ScalarType.Float32).expand(block.shape);
            var probabilities = empty(block.shape, ScalarType.Float32).scatter_(1, order, positions);
            if (n > 1) probabilities.div_(n - 1);
            else probabilities.fill_(0.5);
            probabilities.mul_(2 * epsilon).add_(density - epsilon);
            result.narrow(0, start, block.shape[0]).copy_(block * bernoulli(probabilities, generator));
        }
        return result.view(t.shape);
    }

    /// <summary>
    /// Scales a pruned tensor so its L1 norm matches the original's: mergekit's <c>rescale</c> for magnitude-based
    /// pruning (random pruning rescales by <c>1/density</c> instead). Left as is when either norm is ~0.
    /// </summary>
    public static Tensor RescaleL1(Tensor original, Tensor pruned)
    {
        double before = AbsSum(original), after = AbsSum(pruned);
        return before >= 1e-8 && after >= 1e-8 ? pruned * (before / after) : pruned.clone();
    }

    /// <summary>
    /// <c>sum |t|</c> in float64, a million values at a time: <c>t.abs()</c> whole would be one more tensor of
    /// <paramref name="t"/>'s size (its float64 copy two) at the moment a merge holds the most.
    /// </summary>
    internal static double AbsSum(Tensor t)
    {
        const long Chunk = 1L << 20;
        var flat = t.reshape(-1);
        double sum = 0;
        for (long start = 0; start < flat.numel(); start += Chunk)
        {
            using var scope = NewDisposeScope();
            sum += flat.narrow(0, start, Math.Min(Chunk, flat.numel() - start)).abs().sum(type: ScalarType.Float64).item<double>();
        }
        if (!ReferenceEquals(flat, t)) flat.Dispose();
        return sum;
    }

    /// <summary>
    /// TIES "elect": the majority sign of every parameter across the stacked task vectors, +1 or -1 (+1 on a tie),
    /// in the dtype of <paramref name="stacked"/> [n, ...] -> [...].
    /// </summary>
    public static Tensor ElectSign(Tensor stacked, SignMethod method)
    {
        using var scope = NewDisposeScope();
        var votes = method switch
        {
            SignMethod.Total => stacked.sum(dim: 0),
            SignMethod.Frequency => stacked.sign().sum(dim: 0),
            _ => throw new ArgumentOutOfRangeException(nameof(method), method, null),
        };
        // +1 where votes >= 0, else -1, with one whole-sized temporary (the bool mask) besides the result
        return votes.ge(0).to(stacked.dtype).mul_(2).sub_(1).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Which entries of the stacked task vectors [n, ...] carry the elected sign (a bool mask [n, ...]).
    /// Pruned zeros never agree. PEFT's <c>calculate_majority_sign_mask</c> is <c>SignAgreement(s, ElectSign(s, m))</c>.
    /// </summary>
    public static Tensor SignAgreement(Tensor stacked, Tensor electedSign)
    {
        using var sign = stacked.sign();
        return sign.eq(electedSign);
    }

    /// <summary>
    /// TIES "disjoint merge" as PEFT does it: the mean, per parameter, of the (weighted) task vectors that agree with
    /// the elected sign, dividing by how many agree: <c>sum_i agree_i * x_i / max(1, sum_i agree_i)</c>.
    /// </summary>
    public static Tensor DisjointMerge(Tensor stacked, Tensor agree)
    {
        using var scope = NewDisposeScope();
        var mask = agree.to(stacked.dtype);
        var count = mask.sum(dim: 0).clamp_min(1.0);
        return ((stacked * mask).sum(dim: 0) / count).MoveToOuterDisposeScope();
    }

    /// <summary>Multiplies stacked [n, ...] by one weight per row.</summary>
    public static Tensor Weighted(Tensor stacked, IReadOnlyList<double> weights)
    {
        using var w = RowWeights(stacked, weights);
        return stacked * w;
    }

    /// <summary>The weights as a tensor [n, 1, ...] that broadcasts over stacked [n, ...].</summary>
    public static Tensor RowWeights(Tensor stacked, IReadOnlyList<double> weights)
    {
        if (weights.Count != stacked.shape[0])
            throw new ArgumentException($"{weights.Count} weights for {stacked.shape[0]} task vectors", nameof(weights));
        var shape = new long[stacked.dim()];
        Array.Fill(shape, 1L);
        shape[0] = weights.Count;
        return tensor(weights.ToArray(), dtype: stacked.dtype).view(shape);
    }

    /// <summary>
    /// A bool mask of the <paramref name="k"/> largest entries of a flat tensor, as topk would choose them. Among
    /// entries tied at the threshold the first in memory order are kept, so masks for smaller k are subsets of those
    /// for larger k.
    /// </summary>
    static Tensor LargestMask(Tensor flat, long k)
    {
        long n = flat.numel();
        if (k <= 0) return zeros(n, ScalarType.Bool);
        if (k >= n) return ones(n, ScalarType.Bool);
        using var scope = NewDisposeScope();
        var threshold = KthLargest(flat, k);
        var mask = flat.ge(threshold);
        if (mask.count_nonzero().item<long>() == k) return mask.MoveToOuterDisposeScope();   // no ties at the threshold: the usual case
        mask = flat.gt(threshold);
        long missing = k - mask.count_nonzero().item<long>();
        mask.index_fill_(0, flat.eq(threshold).nonzero().view(-1).narrow(0, 0, missing), true);
        return mask.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The k-th largest value of a flat tensor, exactly. Selection among all n values (kthvalue) dominates the cost of
    /// TIES on large tensors, so a strided sample first brackets the answer in [lo, hi]; then
    /// <c>above = #(x &gt; hi)</c>, and when <c>above &lt; k &lt;= above + #(lo &lt;= x &lt;= hi)</c> the answer is the
    /// (k - above)-th largest of that small band. Otherwise (a bad bracket) it falls back to selecting among all.
    /// </summary>
    static Tensor KthLargest(Tensor flat, long k)
    {
        const long SampleSize = 32_768;
        long n = flat.numel();
        if (n > 4 * SampleSize && flat.dtype is ScalarType.Float32 or ScalarType.Float64)
        {
            var sorted = flat.slice(0, 0, n, n / SampleSize).sort().Values;           // ascending sample
            long m = sorted.numel(), at = (long)((double)(n - k) / n * m), margin = m / 100;
            var lo = sorted[Math.Clamp(at - margin, 0, m - 1)];
            var hi = sorted[Math.Clamp(at + margin, 0, m - 1)];
            long above = flat.gt(hi).count_nonzero().item<long>();
            // index_select(nonzero) rather than masked_select, which is ~20x slower on CPU
            var band = flat.index_select(0, flat.ge(lo).logical_and_(flat.le(hi)).nonzero().view(-1));
            long need = k - above;
            if (need >= 1 && need <= band.numel()) return band.kthvalue(band.numel() - need + 1, 0).Item1;
        }
        return flat.kthvalue(n - k + 1, 0).Item1;
    }

    // int(density * numel), as Python computes it.
    static long KeepCount(long numel, double density) => (long)(density * numel);

    static void CheckDensity(double density)
    {
        if (density < 0 || double.IsNaN(density))
            throw new ArgumentOutOfRangeException(nameof(density), density, "density is the fraction of values kept: it must be in [0, 1]");
    }
}
