using PeftSharp.Models.Decoder;
using PeftSharp.Models.Layers;
using static TorchSharp.torch;

namespace PeftSharp.Models.Llama;

/// <summary>
/// Llama (Touvron et al., 2023), Mistral (Jiang et al., 2023), Qwen2 (Yang et al., 2024) and Qwen3 (Yang et al., 2025)
/// causal LMs: the same block with different defaults (Qwen2: q/k/v bias; Mistral: sliding-window attention; Qwen3:
/// per-head q/k RMSNorm, explicit head_dim, sliding window from max_window_layers on when enabled).
/// </summary>
public static class LlamaForCausalLM
{
    public static DecoderForCausalLM Create(ModelConfig c, ScalarType dtype = ScalarType.Float32) =>
        new(c.ModelType == "qwen3" ? "Qwen3ForCausalLM" : "LlamaForCausalLM", c, dtype,
            new DecoderStack(c, dtype, i => new LlamaDecoderLayer(c, i, dtype), () => new RmsNorm(c.HiddenSize, c.NormEps, dtype)));
}
