using PeftSharp.Models.Decoder;
using PeftSharp.Models.Layers;
using static TorchSharp.torch;

namespace PeftSharp.Models.Phi3;

/// <summary>
/// Phi-3 (Abdin et al., 2024, https://arxiv.org/abs/2404.14219), Phi-3.5-mini and Phi-4-mini causal LMs: Llama's
/// block with fused qkv and gate/up projections, partial rotary and LongRoPE scaling.
/// </summary>
public static class Phi3ForCausalLM
{
    public static DecoderForCausalLM Create(ModelConfig c, ScalarType dtype = ScalarType.Float32) =>
        new("Phi3ForCausalLM", c, dtype,
            new DecoderStack(c, dtype, i => new Phi3DecoderLayer(c, i, dtype), () => new RmsNorm(c.HiddenSize, c.NormEps, dtype)));
}
