using TorchSharp;
using PeftSharp.Models.Decoder;
using PeftSharp.Models.Layers;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace PeftSharp.Models.Llama;

/// <summary>
/// Multi-head attention with grouped-query heads (Ainslie et al., 2023) and RoPE, as in Llama, Mistral, Qwen2 and
/// Qwen3: softmax(q k^T / sqrt(d) + mask) v, where each group of heads shares one key/value head. Qwen3 adds an
/// RMSNorm over each head's queries and keys before RoPE (<c>q_norm</c>, <c>k_norm</c>).
/// </summary>
public sealed class LlamaAttention : nn.Module
{
    readonly int heads, kvHeads, headDim, layerIndex;
    Module<Tensor, Tensor> q_proj, k_proj, v_proj, o_proj;
    Module<Tensor, Tensor>? q_norm, k_norm;

    public LlamaAttention(ModelConfig c, int layerIndex, ScalarType dtype) : base("LlamaAttention")
    {
        heads = c.NumHeads;
        kvHeads = c.NumKvHeads;
        headDim = c.HeadDim;
        this.layerIndex = layerIndex;
        q_proj = nn.Linear(c.HiddenSize, heads * headDim, c.AttentionBias, dtype: dtype);
        k_proj = nn.Linear(c.HiddenSize, kvHeads * headDim, c.AttentionBias, dtype: dtype);
        v_proj = nn.Linear(c.HiddenSize, kvHeads * headDim, c.AttentionBias, dtype: dtype);
        // Qwen2 and Mistral never bias the output projection; Llama and Qwen3 follow attention_bias.
        o_proj = nn.Linear(heads * headDim, c.HiddenSize, c.ModelType is "llama" or "qwen3" && c.AttentionBias, dtype: dtype);
        if (c.QkNorm)
        {
            q_norm = new RmsNorm(headDim, c.NormEps, dtype);
            k_norm = new RmsNorm(headDim, c.NormEps, dtype);
        }
        RegisterComponents();
    }

    /// <param name="x">[B, T, H]</param>
    /// <param name="p">cos/sin [B, T, D] from <see cref="Rope.CosSin"/>; mask additive [B, 1, T, S] or null for plain causal attention.</param>
    public Tensor Forward(Tensor x, LayerInputs p, KvCache? cache)
    {
        using var scope = NewDisposeScope();
        long b = x.shape[0], t = x.shape[1];
        var q = q_proj.call(x).view(b, t, heads, headDim);   // (B, T, nh, hd)
        var k = k_proj.call(x).view(b, t, kvHeads, headDim); // (B, T, nkv, hd)
        if (q_norm is not null) q = q_norm.call(q);
        if (k_norm is not null) k = k_norm!.call(k);
        var v = v_proj.call(x).view(b, t, kvHeads, headDim).transpose(1, 2);
        q = Rope.Apply(q.transpose(1, 2), p.Cos, p.Sin);                // (B, nh, T, hd)
        k = Rope.Apply(k.transpose(1, 2), p.Cos, p.Sin);                // (B, nkv, T, hd)
        if (cache is not null) (k, v) = cache.Append(layerIndex, k, v); // (B, nkv, S, hd)
        var y = AttentionCore.Attend(q, k, v, p.Mask);
        y = y.transpose(1, 2).reshape(b, t, heads * headDim);
        return o_proj.call(y).MoveToOuterDisposeScope();
    }
}
