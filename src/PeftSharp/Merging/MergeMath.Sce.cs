using static TorchSharp.torch;

namespace PeftSharp.Merging;

public static partial class MergeMath
{
    /// <summary>
    /// SCE (https://arxiv.org/abs/2408.07990) as mergekit computes it, for task vectors <c>tau_i = w_i - base</c>:
    /// <b>select</b> the <c>int(select_topk * nonzero)</c> entries whose variance across the models is largest (when
    /// <paramref name="selectTopK"/> &lt; 1), <b>calculate</b> one coefficient per model from its energy,
    /// <c>c_i = mean(tau_i^2) / sum_j mean(tau_j^2)</c> (uniform when all are ~0), <b>erase</b> the entries whose sign
    /// disagrees with the sign of <c>sum_i tau_i</c>, and return
    /// <c>base + sum_i c_i m_i tau_i / max(sum_i c_i m_i, 1e-6)</c>.
    /// </summary>
    public static Tensor Sce(Tensor baseWeight, IReadOnlyList<Tensor> models, double selectTopK) =>
        Sce(baseWeight, models.Count, i => models[i].alias(), selectTopK);

    /// <summary>
    /// <see cref="Sce(Tensor, IReadOnlyList{Tensor}, double)"/> with the models loaded one at a time by
    /// <paramref name="load"/> (each result is disposed once copied), so that only their task vectors are held.
    /// </summary>
    public static Tensor Sce(Tensor baseWeight, int count, Func<int, Tensor> load, double selectTopK)
    {
        if (count == 0) return baseWeight.clone();
        using var scope = NewDisposeScope();     // whole-sized temporaries are freed as soon as used
        var tvs = empty([count, .. baseWeight.shape], baseWeight.dtype);                // [n, ...]
        for (int i = 0; i < count; i++)
            using (var model = load(i)) tvs[i].copy_(model).sub_(baseWeight);
        if (selectTopK < 1)
            using (var selected = SceSelect(tvs, selectTopK)) tvs.mul_(selected);
        var energy = new double[count];
        for (int i = 0; i < count; i++) energy[i] = FlatDot(tvs[i], tvs[i]) / tvs[i].numel();
        double total = energy.Sum();
        // per model: the values that agree with the elected sign, weighted by the model's coefficient
        using var elected = ElectSign(tvs, SignMethod.Total);
        var merged = zeros_like(baseWeight);
        var divisor = zeros_like(baseWeight);
        for (int i = 0; i < count; i++)
        {
            double c = Math.Abs(total) < 1e-6 ? 1.0 / count : energy[i] / total;
            using var tv = tvs[i];
            using var sign = tv.sign();
            using var agree = sign.eq_(elected);                                         // 1 where it agrees, else 0
            merged.add_(tv.mul_(agree), alpha: c);
            divisor.add_(agree, alpha: c);
        }
        tvs.Dispose();
        return merged.div_(divisor.clamp_min_(1e-6)).add_(baseWeight).MoveToOuterDisposeScope();
    }

    /// <summary>SCE's select: a bool mask [...] of the <c>int(fraction * count_nonzero(var))</c> highest-variance entries.</summary>
    static Tensor SceSelect(Tensor tvs, double fraction)
    {
        if (fraction <= 0) return zeros(tvs.shape.Skip(1).ToArray(), ScalarType.Bool);
        using var variance = tvs.var(0, unbiased: false).reshape(-1);                     // >= 0, so no abs
        long k = (long)(variance.count_nonzero().item<long>() * fraction);
        return LargestMask(variance, k).view(tvs.shape.Skip(1).ToArray());
    }
}
