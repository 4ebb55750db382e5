using TorchSharp;
using PeftSharp.Models.Decoder;
using PeftSharp.Models.Layers;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace PeftSharp.Models.Gemma;

/// <summary>
/// Gemma 2/3 attention: grouped-query heads with RoPE, scores scaled by query_pre_attn_scalar^-0.5 rather than
/// head_dim^-0.5, soft-capped as c * tanh(s / c) in Gemma 2, and (Gemma 3) per-head q/k RMSNorm before RoPE.
/// </summary>
public sealed class GemmaAttention : nn.Module
{
    readonly int heads, kvHeads, headDim, layerIndex;
    readonly double scale;
    readonly double? softcap;
    Module<Tensor, Tensor> q_proj, k_proj, v_proj, o_proj;
    Module<Tensor, Tensor>? q_norm, k_norm;

    public GemmaAttention(ModelConfig c, int layerIndex, ScalarType dtype) : base("GemmaAttention")
    {
        heads = c.NumHeads;
        kvHeads = c.NumKvHeads;
        headDim = c.HeadDim;
        this.layerIndex = layerIndex;
        scale = Math.Pow(c.QueryPreAttnScalar ?? c.HeadDim, -0.5);
        softcap = c.AttnLogitSoftcapping;
        q_proj = nn.Linear(c.HiddenSize, heads * headDim, c.AttentionBias, dtype: dtype);
        k_proj = nn.Linear(c.HiddenSize, kvHeads * headDim, c.AttentionBias, dtype: dtype);
        v_proj = nn.Linear(c.HiddenSize, kvHeads * headDim, c.AttentionBias, dtype: dtype);
        o_proj = nn.Linear(heads * headDim, c.HiddenSize, c.AttentionBias, dtype: dtype);
        if (c.QkNorm)
        {
            q_norm = new GemmaRmsNorm(headDim, c.NormEps, dtype);
            k_norm = new GemmaRmsNorm(headDim, c.NormEps, dtype);
        }
        RegisterComponents();
    }

    /// <param name="x">[B, T, H]</param>
    public Tensor Forward(Tensor x, LayerInputs p, KvCache? cache)
    {
        using var scope = NewDisposeScope();
        long b = x.shape[0], t = x.shape[1];
        var q = q_proj.call(x).view(b, t, heads, headDim);   // (B, T, nh, hd)
        var k = k_proj.call(x).view(b, t, kvHeads, headDim); // (B, T, nkv, hd)
        if (q_norm is not null) q = q_norm.call(q);
        if (k_norm is not null) k = k_norm.call(k);
        var v = v_proj.call(x).view(b, t, kvHeads, headDim).transpose(1, 2);
        q = Rope.Apply(q.transpose(1, 2), p.Cos, p.Sin);
        k = Rope.Apply(k.transpose(1, 2), p.Cos, p.Sin);
        if (cache is not null) (k, v) = cache.Append(layerIndex, k, v); // (B, nkv, S, hd)
        var y = AttentionCore.Attend(q, k, v, p.Mask, scale, softcap);
        y = y.transpose(1, 2).reshape(b, t, heads * headDim);
        return o_proj.call(y).MoveToOuterDisposeScope();
    }
}
