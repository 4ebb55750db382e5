using TorchSharp;
using PeftSharp.Models.Decoder;
using PeftSharp.Models.Layers;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace PeftSharp.Models.Phi3;

/// <summary>
/// Phi-3 attention: Llama's, with q, k and v from one fused projection <c>qkv_proj</c> (rows: q heads, then k, then v)
/// and RoPE on the first <c>partial_rotary_factor</c> of each head (Phi-4-mini).
/// </summary>
public sealed class Phi3Attention : nn.Module
{
    readonly int heads, kvHeads, headDim, layerIndex;
    Module<Tensor, Tensor> qkv_proj, o_proj;

    public Phi3Attention(ModelConfig c, int layerIndex, ScalarType dtype) : base("Phi3Attention")
    {
        heads = c.NumHeads;
        kvHeads = c.NumKvHeads;
        headDim = c.HeadDim;
        this.layerIndex = layerIndex;
        qkv_proj = nn.Linear(c.HiddenSize, (heads + 2 * kvHeads) * headDim, hasBias: false, dtype: dtype);
        o_proj = nn.Linear(heads * headDim, c.HiddenSize, hasBias: false, dtype: dtype);
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, LayerInputs p, KvCache? cache)
    {
        using var scope = NewDisposeScope();
        long b = x.shape[0], t = x.shape[1];
        var qkv = qkv_proj.call(x).split([heads * headDim, kvHeads * headDim, kvHeads * headDim], -1);
        var q = Rope.Apply(qkv[0].view(b, t, heads, headDim).transpose(1, 2), p.Cos, p.Sin);   // (B, nh, T, hd)
        var k = Rope.Apply(qkv[1].view(b, t, kvHeads, headDim).transpose(1, 2), p.Cos, p.Sin); // (B, nkv, T, hd)
        var v = qkv[2].view(b, t, kvHeads, headDim).transpose(1, 2);
        if (cache is not null) (k, v) = cache.Append(layerIndex, k, v);
        var y = AttentionCore.Attend(q, k, v, p.Mask);
        y = y.transpose(1, 2).reshape(b, t, heads * headDim);
        return o_proj.call(y).MoveToOuterDisposeScope();
    }
}

/// <summary>Phi-3's SwiGLU with fused gate and up projections: gate, up = chunk(gate_up(x)); down(up * silu(gate)).</summary>
public sealed class Phi3MLP : nn.Module<Tensor, Tensor>
{
    readonly long intermediate;
    Module<Tensor, Tensor> gate_up_proj, down_proj;

    public Phi3MLP(ModelConfig c, ScalarType dtype) : base("Phi3MLP")
    {
        intermediate = c.IntermediateSize;
        gate_up_proj = nn.Linear(c.HiddenSize, 2 * c.IntermediateSize, hasBias: false, dtype: dtype);
        down_proj = nn.Linear(c.IntermediateSize, c.HiddenSize, hasBias: false, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var gateUp = gate_up_proj.call(x).split([intermediate, intermediate], -1);
        return down_proj.call(gateUp[1] * nn.functional.silu(gateUp[0])).MoveToOuterDisposeScope();
    }
}

/// <summary>Pre-norm block as Llama's (the residual dropouts are identity at inference and 0 in released configs).</summary>
public sealed class Phi3DecoderLayer : nn.Module, IDecoderLayer
{
    Phi3Attention self_attn;
    Module<Tensor, Tensor> mlp;
    Module<Tensor, Tensor> input_layernorm, post_attention_layernorm;

    public Phi3DecoderLayer(ModelConfig c, int index, ScalarType dtype) : base("Phi3DecoderLayer")
    {
        self_attn = new Phi3Attention(c, index, dtype);
        mlp = new Phi3MLP(c, dtype);
        input_layernorm = new RmsNorm(c.HiddenSize, c.NormEps, dtype);
        post_attention_layernorm = new RmsNorm(c.HiddenSize, c.NormEps, dtype);
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, LayerInputs p, KvCache? cache)
    {
        using var scope = NewDisposeScope();
        var h = x + self_attn.Forward(input_layernorm.call(x), p, cache);
        return (h + mlp.call(post_attention_layernorm.call(h))).MoveToOuterDisposeScope();
    }
}
