using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.AdaLora;

/// <summary>AdaLoRA's (and IncreLoRA's) regulariser that keeps P and Q of the SVD form near-orthogonal.</summary>
public static class OrthogonalPenalty
{
    /// <summary>
    /// <paramref name="weight"/> × the mean over every layer's Q [r, in] and P [out, r] of ||QQᵀ - I||_F and ||PᵀP - I||_F;
    /// zero when there are no layers.
    /// </summary>
    public static Tensor Of(IEnumerable<(Tensor Q, Tensor P)> layers, double weight)
    {
        using var scope = NewDisposeScope();
        Tensor total = zeros(1);
        int count = 0;
        foreach (var (q, p) in layers)
            foreach (var cov in new[] { matmul(q, q.t()), matmul(p.t(), p) }) // [r, r]
            {
                using var eye = torch.eye(cov.shape[0], dtype: cov.dtype, device: cov.device);
                total = total.to(cov.device) + (cov - eye).pow(2).sum().sqrt();
                count++;
            }
        var reg = count > 0 ? total.squeeze() / count * weight : total.squeeze();
        return reg.MoveToOuterDisposeScope();
    }
}
