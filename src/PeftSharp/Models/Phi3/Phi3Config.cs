using System.Text.Json.Nodes;
using static PeftSharp.Models.ModelConfig;

namespace PeftSharp.Models.Phi3;

/// <summary>Reads Phi-3 / Phi-3.5 / Phi-4-mini configs (<c>phi3</c>), 4.x or 5.x layout, with transformers' defaults.</summary>
internal static class Phi3Config
{
    public static ModelConfig Parse(JsonObject o, string[] archs)
    {
        int hidden = Int(o, "hidden_size")!.Value, heads = Int(o, "num_attention_heads")!.Value;
        var act = Str(o, "hidden_act") ?? "silu";
        if (act != "silu") throw new NotSupportedException($"hidden_act '{act}' is not supported for phi3 (only silu)");
        var rope = RopeDict(o);
        var c = new ModelConfig
        {
            ModelType = "phi3", Architectures = archs, Raw = o,
            VocabSize = Int(o, "vocab_size")!.Value, HiddenSize = hidden, IntermediateSize = Int(o, "intermediate_size")!.Value,
            NumLayers = Int(o, "num_hidden_layers")!.Value, NumHeads = heads, NumKvHeads = Int(o, "num_key_value_heads") ?? heads,
            HeadDim = Int(o, "head_dim") ?? hidden / heads, HiddenAct = act, NormEps = Dbl(o, "rms_norm_eps") ?? 1e-5,
            MaxPositions = Int(o, "max_position_embeddings") ?? 4096, TieWordEmbeddings = Bool(o, "tie_word_embeddings") ?? false,
            RopeTheta = (rope is null ? null : Dbl(rope, "rope_theta")) ?? Dbl(o, "rope_theta") ?? 10000.0,
            RopeScaling = RopeScalingOf(o, rope), SlidingWindow = Int(o, "sliding_window"),
            PartialRotaryFactor = Dbl(o, "partial_rotary_factor") ?? (rope is null ? null : Dbl(rope, "partial_rotary_factor")) ?? 1.0,
        };
        int rotaryHalf = (int)(c.HeadDim * c.PartialRotaryFactor) / 2;
        if (c.RopeScaling is { ShortFactor: { } sf, LongFactor: { } lf } && (sf.Length != rotaryHalf || lf.Length != rotaryHalf))
            throw new InvalidDataException($"rope_scaling: short_factor has {sf.Length} entries and long_factor {lf.Length}; " +
                $"head_dim {c.HeadDim} x partial_rotary_factor {c.PartialRotaryFactor} needs {rotaryHalf} each");
        return WithTokenIds(c, o);
    }
}
