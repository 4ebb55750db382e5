using static TorchSharp.torch;

namespace PeftSharp.Analysis;

/// <summary>
/// The spectral measures of Shuttleworth et al., "LoRA vs Full Fine-tuning: An Illusion of Equivalence"
/// (https://arxiv.org/abs/2410.21228), as PEFT's <c>reduce_intruder_dimension</c> computes them.
/// </summary>
public static class Spectra
{
    /// <summary>
    /// Entropy-based effective rank (Roy &amp; Vetterli, 2007): <c>exp(-sum p_k log p_k)</c> with <c>p_k = s_k / sum s</c>
    /// over the singular values <paramref name="singularValues"/>; 0 for a zero matrix. It equals k for k equal
    /// non-zero singular values and is continuous in between.
    /// </summary>
    public static double EffectiveRank(Tensor singularValues)
    {
        using var scope = NewDisposeScope();
        var s = singularValues.to(ScalarType.Float64);
        double total = s.sum().item<double>();
        if (!(total > 0)) return 0;
        var p = s / total;
        p = p.masked_select(p > 0);                           // 0 log 0 = 0
        return Math.Exp(-(p * p.log()).sum().item<double>());
    }

    /// <summary>
    /// Intruder dimensions of <paramref name="tuned"/> = W0 + dW with respect to <paramref name="baseWeight"/> = W0
    /// (both [rows, cols], computed in float32): with U0 and U the left singular vectors of W0 and W0 + dW,
    /// the cosine of tuned vector i is <c>max_j |U[:, i] . U0[:, j]|</c>, and an intruder is one of the first
    /// <paramref name="topK"/> tuned vectors whose cosine is below <paramref name="epsilon"/>.
    /// </summary>
    public static IntruderScan Intruders(Tensor baseWeight, Tensor tuned, int topK, double epsilon)
    {
        using var scope = NewDisposeScope();
        var (u0, s0, _) = linalg.svd(baseWeight.to(ScalarType.Float32), fullMatrices: false);  // u0 [rows, k]
        var (u, s, _) = linalg.svd(tuned.to(ScalarType.Float32), fullMatrices: false);          // u  [rows, k]
        var cosines = u.t().matmul(u0).abs().max(1).values;                                     // [k]: best match per tuned vector
        var top = cosines.narrow(0, 0, Math.Min(topK, cosines.shape[0])).data<float>().ToArray();
        var intruders = Enumerable.Range(0, top.Length).Where(i => top[i] < epsilon).ToArray();
        return new IntruderScan(top, intruders, s0.data<float>().ToArray(), s.data<float>().ToArray());
    }
}

/// <summary>
/// What <see cref="Spectra.Intruders"/> found: the top-k tuned singular vectors' cosines with the base ones, which of them
/// are intruders (indices into the top k, by decreasing singular value), and both singular spectra.
/// </summary>
public sealed record IntruderScan(float[] Cosines, int[] Intruders, float[] BaseSpectrum, float[] TunedSpectrum);
