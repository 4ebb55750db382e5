using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Models;

public static class Losses
{
    public const long IgnoreIndex = -100;

    /// <summary>
    /// Causal LM loss as transformers computes it: logits[:, :-1] predict labels[:, 1:], float32 cross-entropy,
    /// mean over the positions whose label is not -100.
    /// </summary>
    public static Tensor CausalLM(Tensor logits, Tensor labels)
    {
        using var scope = NewDisposeScope();
        var v = logits.shape[^1];
        var shiftLogits = logits[.., ..^1, ..].to(ScalarType.Float32).reshape(-1, v);
        var shiftLabels = labels[.., 1..].reshape(-1);
        return nn.functional.cross_entropy(shiftLogits, shiftLabels, ignore_index: IgnoreIndex).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// <see cref="CausalLM(Tensor, Tensor)"/> of the logits <c>hidden @ weight^T + bias</c>, computed <paramref name="chunkTokens"/>
    /// tokens at a time so that the [B, T, vocab] logits and their gradient never exist (0: chunks of about 256 MB of float32 logits).
    /// Same numbers, within rounding; gradients flow to whichever of hidden, weight and bias require them.
    /// </summary>
    public static Tensor CausalLMFused(Tensor hidden, Tensor weight, Tensor? bias, Tensor labels, long chunkTokens = 0)
    {
        long rows = FusedLinearCrossEntropy.ChunkRows(weight.shape[0], chunkTokens);
        bool grad = is_grad_enabled() && (hidden.requires_grad || weight.requires_grad || bias?.requires_grad == true);
        return grad
            ? FusedLinearCrossEntropy.apply(hidden, weight, bias!, labels, rows)
            : FusedLinearCrossEntropy.Run(hidden, weight, bias, labels, rows, false, false, false).Loss;
    }

    /// <summary>Sum of token losses and the number of counted tokens (for exact means over many batches).</summary>
    public static (double Sum, long Count) CausalLMSum(Tensor logits, Tensor labels)
    {
        using var scope = NewDisposeScope();
        var v = logits.shape[^1];
        var shiftLogits = logits[.., ..^1, ..].to(ScalarType.Float32).reshape(-1, v);
        var shiftLabels = labels[.., 1..].reshape(-1);
        var sum = nn.functional.cross_entropy(shiftLogits, shiftLabels, ignore_index: IgnoreIndex, reduction: nn.Reduction.Sum);
        long count = shiftLabels.ne(IgnoreIndex).sum().item<long>();
        return (sum.to(ScalarType.Float64).item<double>(), count);
    }
}
