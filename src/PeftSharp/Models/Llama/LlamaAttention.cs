using TorchSharp;
using PeftSharp.Models.Layers;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace PeftSharp.Models.Llama;

/// <summary>
/// Multi-head attention with grouped-query heads (Ainslie et al., 2023) and RoPE, as in Llama, Mistral and Qwen2:
/// softmax(q k^T / sqrt(d) + mask) v, where each group of heads shares one key/value head.
/// </summary>
public sealed class LlamaAttention : nn.Module
{
    readonly int heads, kvHeads, headDim, layerIndex;
    Module<Tensor, Tensor> q_proj, k_proj, v_proj, o_proj;

    public LlamaAttention(ModelConfig c, int layerIndex, ScalarType dtype) : base("LlamaAttention")
    {
        heads = c.NumHeads;
        kvHeads = c.NumKvHeads;
        headDim = c.HeadDim;
        this.layerIndex = layerIndex;
        q_proj = nn.Linear(c.HiddenSize, heads * headDim, c.AttentionBias, dtype: dtype);
        k_proj = nn.Linear(c.HiddenSize, kvHeads * headDim, c.AttentionBias, dtype: dtype);
        v_proj = nn.Linear(c.HiddenSize, kvHeads * headDim, c.AttentionBias, dtype: dtype);
        o_proj = nn.Linear(heads * headDim, c.HiddenSize, c.ModelType == "llama" && c.AttentionBias, dtype: dtype);
        RegisterComponents();
    }

    /// <param name="x">[B, T, H]</param>
    /// <param name="cos">[B, T, D] from <see cref="Rope.CosSin"/>; likewise <paramref name="sin"/>.</param>
    /// <param name="mask">additive [B, 1, T, S], or null for plain causal attention.</param>
    public Tensor Forward(Tensor x, Tensor cos, Tensor sin, Tensor? mask, KvCache? cache)
    {
        using var scope = NewDisposeScope();
        long b = x.shape[0], t = x.shape[1];
        var q = q_proj.call(x).view(b, t, heads, headDim).transpose(1, 2);   // (B, nh, T, hd)
        var k = k_proj.call(x).view(b, t, kvHeads, headDim).transpose(1, 2); // (B, nkv, T, hd)
        var v = v_proj.call(x).view(b, t, kvHeads, headDim).transpose(1, 2);
        q = Rope.Apply(q, cos, sin);
        k = Rope.Apply(k, cos, sin);
        if (cache is not null) (k, v) = cache.Append(layerIndex, k, v);        // (B, nkv, S, hd)
        if (kvHeads != heads)
        {
            k = k.repeat_interleave(heads / kvHeads, dim: 1);
            v = v.repeat_interleave(heads / kvHeads, dim: 1);
        }
        var y = nn.functional.scaled_dot_product_attention(q, k, v, mask, 0.0, mask is null && t > 1);
        y = y.transpose(1, 2).reshape(b, t, heads * headDim);
        return o_proj.call(y).MoveToOuterDisposeScope();
    }
}
