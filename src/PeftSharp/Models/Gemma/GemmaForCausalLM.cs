using PeftSharp.Models.Decoder;
using PeftSharp.Models.Layers;
using static TorchSharp.torch;

namespace PeftSharp.Models.Gemma;

/// <summary>
/// Gemma 2 (Gemma Team, 2024, https://arxiv.org/abs/2408.00118) and Gemma 3 text (2025,
/// https://arxiv.org/abs/2503.19786) causal LMs: embeddings times sqrt(hidden), (1 + w) RMSNorms, GeGLU, local
/// sliding-window layers between global ones, tied embeddings. Gemma 2 soft-caps attention scores and logits;
/// Gemma 3 normalises q/k instead and gives its local layers their own RoPE base.
/// </summary>
public static class GemmaForCausalLM
{
    public static DecoderForCausalLM Create(ModelConfig c, ScalarType dtype = ScalarType.Float32)
    {
        bool g3 = c.ModelType == "gemma3_text";
        var stack = new DecoderStack(c, dtype, i => new GemmaDecoderLayer(c, i, dtype), () => new GemmaRmsNorm(c.HiddenSize, c.NormEps, dtype),
            g3 ? EmbeddingScale.Lookup : EmbeddingScale.AllInputs);
        return new DecoderForCausalLM(g3 ? "Gemma3ForCausalLM" : "Gemma2ForCausalLM", c, dtype, stack);
    }
}
