using TorchSharp;
using PeftSharp.Models.Decoder;
using PeftSharp.Models.Layers;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace PeftSharp.Models.Gemma;

/// <summary>GeGLU feed-forward (Shazeer, 2020): down(gelu_tanh(gate(x)) * up(x)).</summary>
public sealed class GemmaMLP : nn.Module<Tensor, Tensor>
{
    Module<Tensor, Tensor> gate_proj, up_proj, down_proj;

    public GemmaMLP(ModelConfig c, ScalarType dtype) : base("GemmaMLP")
    {
        gate_proj = nn.Linear(c.HiddenSize, c.IntermediateSize, false, dtype: dtype);
        up_proj = nn.Linear(c.HiddenSize, c.IntermediateSize, false, dtype: dtype);
        down_proj = nn.Linear(c.IntermediateSize, c.HiddenSize, false, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return down_proj.call(Layers.Activations.GeluTanh(gate_proj.call(x)) * up_proj.call(x)).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// Gemma 2/3 block, "sandwich" norms: h = x + norm2(attn(norm1(x))), then h + norm4(mlp(norm3(h))).
/// </summary>
public sealed class GemmaDecoderLayer : nn.Module, IDecoderLayer
{
    GemmaAttention self_attn;
    Module<Tensor, Tensor> mlp;
    Module<Tensor, Tensor> input_layernorm, post_attention_layernorm, pre_feedforward_layernorm, post_feedforward_layernorm;

    public GemmaDecoderLayer(ModelConfig c, int index, ScalarType dtype) : base("GemmaDecoderLayer")
    {
        self_attn = new GemmaAttention(c, index, dtype);
        mlp = new GemmaMLP(c, dtype);
        input_layernorm = new GemmaRmsNorm(c.HiddenSize, c.NormEps, dtype);
        post_attention_layernorm = new GemmaRmsNorm(c.HiddenSize, c.NormEps, dtype);
        pre_feedforward_layernorm = new GemmaRmsNorm(c.HiddenSize, c.NormEps, dtype);
        post_feedforward_layernorm = new GemmaRmsNorm(c.HiddenSize, c.NormEps, dtype);
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, LayerInputs p, KvCache? cache)
    {
        using var scope = NewDisposeScope();
        var h = x + post_attention_layernorm.call(self_attn.Forward(input_layernorm.call(x), p, cache));
        return (h + post_feedforward_layernorm.call(mlp.call(pre_feedforward_layernorm.call(h)))).MoveToOuterDisposeScope();
    }
}
