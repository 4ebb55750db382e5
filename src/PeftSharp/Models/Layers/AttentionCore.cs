using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Models.Layers;

/// <summary>softmax(q k^T * scale + mask) v over grouped-query heads, with Gemma 2's optional score soft-capping.</summary>
internal static class AttentionCore
{
    /// <param name="q">(B, nh, T, hd)</param>
    /// <param name="k">(B, nkv, S, hd); likewise <paramref name="v"/>.</param>
    /// <param name="mask">additive (B, 1, T, S), or null for plain causal attention (then S = T).</param>
    /// <param name="scale">null: 1/sqrt(hd) through the fused kernel; else the eager path, as transformers' eager attention.</param>
    /// <param name="softcap">c in c * tanh(scores / c), applied before the mask; null = off.</param>
    /// <returns>(B, nh, T, hd)</returns>
    public static Tensor Attend(Tensor q, Tensor k, Tensor v, Tensor? mask, double? scale = null, double? softcap = null)
    {
        using var scope = NewDisposeScope();
        long heads = q.shape[1], kvHeads = k.shape[1], t = q.shape[2];
        if (kvHeads != heads)
        {
            k = k.repeat_interleave(heads / kvHeads, dim: 1);
            v = v.repeat_interleave(heads / kvHeads, dim: 1);
        }
        if (scale is null && softcap is null)
            return nn.functional.scaled_dot_product_attention(q, k, v, mask, 0.0, mask is null && t > 1).MoveToOuterDisposeScope();

        var scores = matmul(q, k.transpose(2, 3)) * (scale ?? 1.0 / Math.Sqrt(q.shape[^1])); // (B, nh, T, S)
        if (softcap is { } c) scores = tanh(scores / c) * c;
        if (mask is not null) scores = scores + mask;
        else if (t > 1) scores = scores.masked_fill(ones(t, t, ScalarType.Bool, q.device).triu(1), float.NegativeInfinity);
        var weights = scores.softmax(-1, ScalarType.Float32).to(q.dtype);
        return matmul(weights, v).MoveToOuterDisposeScope();
    }
}
