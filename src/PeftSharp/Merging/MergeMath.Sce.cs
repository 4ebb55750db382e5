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
    public static Tensor Sce(Tensor baseWeight, IReadOnlyList<Tensor> models, double selectTopK)
    {
        if (models.Count == 0) return baseWeight.clone();
        using var scope = NewDisposeScope();     // whole-sized temporaries are freed as soon as used
        int n = models.Count;
        var tvs = empty([n, .. baseWeight.shape], baseWeight.dtype);                    // [n, ...]
        for (int i = 0; i < n; i++) tvs[i].copy_(models[i]).sub_(baseWeight);
        if (selectTopK < 1)
            using (var selected = SceSelect(tvs, selectTopK)) tvs.mul_(selected);
        Tensor erased;
        using (var sign = ElectSign(tvs, SignMethod.Total))
        using (var agree = SignAgreement(tvs, sign))
            erased = agree.to(tvs.dtype);
        var energy = new double[n];
        for (int i = 0; i < n; i++) energy[i] = Dot(tvs[i], tvs[i]) / tvs[i].numel();
        double total = energy.Sum();
        for (int i = 0; i < n; i++) erased[i].mul_(Math.Abs(total) < 1e-6 ? 1.0 / n : energy[i] / total);
        var divisor = erased.sum(dim: 0).clamp_min_(1e-6);
        var merged = tvs.mul_(erased).sum(dim: 0).div_(divisor);
        erased.Dispose();
        tvs.Dispose();
        return merged.add_(baseWeight).MoveToOuterDisposeScope();
    }

    /// <summary>SCE's select: a 0/1 mask [...] of the <c>int(fraction * count_nonzero(var))</c> highest-variance entries.</summary>
    static Tensor SceSelect(Tensor tvs, double fraction)
    {
        var variance = tvs.var(0, unbiased: false).reshape(-1);
        if (fraction <= 0) return zeros(tvs.shape.Skip(1).ToArray(), tvs.dtype);
        long k = (long)(variance.count_nonzero().item<long>() * fraction);
        return LargestMask(variance.abs(), k).to(tvs.dtype).view(tvs.shape.Skip(1).ToArray());
    }
}
