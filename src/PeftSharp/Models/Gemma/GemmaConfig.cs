using System.Text.Json.Nodes;
using static PeftSharp.Models.ModelConfig;

namespace PeftSharp.Models.Gemma;

/// <summary>
/// Reads Gemma 2 (<c>gemma2</c>) and Gemma 3 text (<c>gemma3_text</c>, or the <c>text_config</c> of a <c>gemma3</c>
/// checkpoint) configs, in the transformers 4.x and 5.x layouts, with transformers' defaults.
/// </summary>
internal static class GemmaConfig
{
    public static ModelConfig Parse(JsonObject o, string type, string[] archs)
    {
        bool g3 = type == "gemma3_text";
        if (Bool(o, "use_bidirectional_attention") == true)
            throw new NotSupportedException("use_bidirectional_attention (EmbeddingGemma) is not supported: only causal Gemma models");
        var act = Str(o, "hidden_activation") ?? Str(o, "hidden_act") ?? "gelu_pytorch_tanh";
        if (act is not ("gelu_pytorch_tanh" or "gelu_new"))
            throw new NotSupportedException($"hidden_activation '{act}' is not supported for {type} (only gelu_pytorch_tanh)");
        int heads = Int(o, "num_attention_heads") ?? 8, layers = Int(o, "num_hidden_layers") ?? 26;
        // Gemma 2 alternates sliding and global layers; Gemma 3 has five sliding layers to one global by default.
        int pattern = g3 ? Int(o, "sliding_window_pattern") ?? 6 : 2;
        var layerTypes = LayerTypesOf(o, layers) ?? Enumerable.Range(0, layers)
            .Select(i => (i + 1) % pattern != 0 ? "sliding_attention" : "full_attention").ToArray();
        var (theta, scaling, localTheta, localScaling) = g3 ? Gemma3Rope(o) : (GlobalTheta(o, 10000.0), RopeScalingOf(o, RopeDict(o)), (double?)null, (RopeScaling?)null);
        var c = new ModelConfig
        {
            ModelType = type, Architectures = archs, Raw = o,
            VocabSize = Int(o, "vocab_size") ?? (g3 ? 262208 : 256000), HiddenSize = Int(o, "hidden_size") ?? 2304,
            IntermediateSize = Int(o, "intermediate_size") ?? 9216, NumLayers = layers,
            NumHeads = heads, NumKvHeads = Int(o, "num_key_value_heads") ?? 4, HeadDim = Int(o, "head_dim") ?? 256,
            HiddenAct = "gelu_pytorch_tanh", NormEps = Dbl(o, "rms_norm_eps") ?? 1e-6,
            MaxPositions = Int(o, "max_position_embeddings") ?? (g3 ? 131072 : 8192),
            TieWordEmbeddings = Bool(o, "tie_word_embeddings") ?? true, AttentionBias = Bool(o, "attention_bias") ?? false,
            RopeTheta = theta, RopeScaling = scaling, LocalRopeTheta = localTheta, LocalRopeScaling = localScaling,
            SlidingWindow = o.ContainsKey("sliding_window") ? Int(o, "sliding_window") : 4096, LayerTypes = layerTypes,
            QkNorm = g3, QueryPreAttnScalar = Dbl(o, "query_pre_attn_scalar") ?? 256,
            // transformers' Gemma 3 attention ignores attn_logit_softcapping; Gemma 2 defaults to 50 and 30.
            AttnLogitSoftcapping = g3 ? null : Capping(o, "attn_logit_softcapping", 50.0),
            FinalLogitSoftcapping = Capping(o, "final_logit_softcapping", g3 ? null : 30.0),
        };
        return WithTokenIds(c, o);
    }

    /// <summary>A multimodal <c>gemma3</c> config: its text model, to be saved back as a text-only Gemma3ForCausalLM.</summary>
    public static ModelConfig ParseNested(JsonObject o, string[] archs)
    {
        if (o["text_config"] is not JsonObject text)
            throw new InvalidDataException("model_type 'gemma3' has no text_config object");
        var raw = (JsonObject)text.DeepClone();
        raw["model_type"] = "gemma3_text";
        raw["architectures"] = new JsonArray("Gemma3ForCausalLM");
        foreach (var k in new[] { "bos_token_id", "eos_token_id", "pad_token_id", "tie_word_embeddings" })
            if (!raw.ContainsKey(k) && o[k] is { } v) raw[k] = v.DeepClone();
        return Parse(raw, "gemma3_text", ["Gemma3ForCausalLM"]);
    }

    // An explicit null turns capping off; a missing key takes the architecture's default.
    static double? Capping(JsonObject o, string key, double? fallback) => o.ContainsKey(key) ? Dbl(o, key) : fallback;

    static double GlobalTheta(JsonObject o, double fallback) => RopeDict(o) is { } d && Dbl(d, "rope_theta") is { } t ? t : Dbl(o, "rope_theta") ?? fallback;

    // 5.x: rope_parameters = {full_attention: {...}, sliding_attention: {...}}. 4.x: rope_theta and rope_scaling for the
    // global layers, an unscaled rope_local_base_freq for the sliding ones.
    static (double, RopeScaling?, double?, RopeScaling?) Gemma3Rope(JsonObject o)
    {
        if (RopeDict(o, "full_attention") is { } full && o["rope_parameters"] is JsonObject p && p.ContainsKey("full_attention"))
        {
            var local = RopeDict(o, "sliding_attention");
            return (Dbl(full, "rope_theta") ?? Dbl(o, "rope_theta") ?? 1_000_000.0, RopeScalingOf(o, full),
                (local is null ? null : Dbl(local, "rope_theta")) ?? Dbl(o, "rope_local_base_freq") ?? 10_000.0,
                local is null ? null : RopeScalingOf(o, local));
        }
        return (GlobalTheta(o, 1_000_000.0), RopeScalingOf(o, RopeDict(o)), Dbl(o, "rope_local_base_freq") ?? 10_000.0, null);
    }
}
