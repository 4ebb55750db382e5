using static TorchSharp.torch;

namespace PeftSharp.Training;

/// <summary><c>torch.nn.utils.clip_grad_norm_</c>, computed with the same tensor operations in the same order.</summary>
public static class GradClip
{
    /// <summary>
    /// Scales all gradients in place so their global norm is at most <paramref name="maxNorm"/>, and returns the
    /// global norm before clipping: <c>total = ||(||g_1||, ..., ||g_n||)||</c>, <c>coef = min(1, max_norm / (total + 1e-6))</c>,
    /// <c>g *= coef</c> (always, like PyTorch, even when coef is 1). <paramref name="normType"/> may be
    /// <see cref="double.PositiveInfinity"/>. A non-positive <paramref name="maxNorm"/> only measures.
    /// </summary>
    public static double ClipGradNorm(IEnumerable<Tensor> parameters, double maxNorm, double normType = 2.0)
    {
        using var scope = NewDisposeScope();
        var grads = parameters.Select(p => p.grad).Where(g => g is not null).Cast<Tensor>().ToList();
        return ClipGradientsTensor(grads, maxNorm, normType).to(ScalarType.Float64).item<double>();
    }

    /// <summary>
    /// Clips the gradients themselves (<paramref name="grads"/>: one per parameter, or the flat buffers of
    /// <see cref="FusedAdamW"/>, which take a handful of kernels where one per parameter would take hundreds).
    /// The norm stays a tensor on the gradients' device, so nothing waits for the GPU: the trainer reads it with the
    /// step's loss, in one transfer.
    /// </summary>
    public static Tensor ClipGradientsTensor(IReadOnlyList<Tensor> grads, double maxNorm, double normType = 2.0)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        if (grads.Count == 0) return tensor(0f).MoveToOuterDisposeScope();
        var norms = grads.Select(g => linalg.vector_norm(g, normType)).ToArray();
        var total = linalg.vector_norm(stack(norms), normType);
        if (maxNorm > 0)
        {
            // Python's `max_norm / tensor` is `tensor.reciprocal() * max_norm`; the order matters for the last bit.
            var coef = (total + 1e-6).reciprocal() * maxNorm;
            var clamped = coef.clamp_max(1.0);
            foreach (var g in grads) g.mul_(clamped);
        }
        return total.MoveToOuterDisposeScope();
    }
}
