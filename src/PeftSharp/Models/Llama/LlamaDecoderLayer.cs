using TorchSharp;
using PeftSharp.Models.Decoder;
using PeftSharp.Models.Layers;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace PeftSharp.Models.Llama;

/// <summary>SwiGLU feed-forward (Shazeer, 2020): down(silu(gate(x)) * up(x)).</summary>
public sealed class LlamaMLP : nn.Module<Tensor, Tensor>
{
    Module<Tensor, Tensor> gate_proj, up_proj, down_proj;

    public LlamaMLP(ModelConfig c, ScalarType dtype) : base("LlamaMLP")
    {
        if (c.HiddenAct != "silu") throw new NotSupportedException($"hidden_act '{c.HiddenAct}' is not supported for {c.ModelType} (only silu)");
        gate_proj = nn.Linear(c.HiddenSize, c.IntermediateSize, c.MlpBias, dtype: dtype);
        up_proj = nn.Linear(c.HiddenSize, c.IntermediateSize, c.MlpBias, dtype: dtype);
        down_proj = nn.Linear(c.IntermediateSize, c.HiddenSize, c.MlpBias, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return down_proj.call(nn.functional.silu(gate_proj.call(x)) * up_proj.call(x)).MoveToOuterDisposeScope();
    }
}

/// <summary>Pre-norm block: x + attn(norm(x)), then h + mlp(norm(h)).</summary>
public sealed class LlamaDecoderLayer : nn.Module, IDecoderLayer
{
    LlamaAttention self_attn;
    // Typed as plain modules so that adapters (LN tuning, bottleneck adapters) can wrap them.
    Module<Tensor, Tensor> mlp;
    Module<Tensor, Tensor> input_layernorm, post_attention_layernorm;

    public LlamaDecoderLayer(ModelConfig c, int index, ScalarType dtype) : base("LlamaDecoderLayer")
    {
        self_attn = new LlamaAttention(c, index, dtype);
        mlp = new LlamaMLP(c, dtype);
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
