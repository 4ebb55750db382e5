using System.Text.Json.Nodes;

namespace PeftSharp.Models;

/// <summary>
/// RoPE frequency scaling from <c>rope_scaling</c> (transformers 4.x) or <c>rope_parameters</c> (5.x). LongRoPE keeps
/// its per-frequency factors and the attention factor that scales cos/sin (resolved when the config is read).
/// </summary>
public sealed record RopeScaling(string Type, double Factor = 1.0, double LowFreqFactor = 1.0, double HighFreqFactor = 4.0,
    int? OriginalMaxPositionEmbeddings = null)
{
    public double[]? ShortFactor { get; init; }
    public double[]? LongFactor { get; init; }
    public double? AttentionFactor { get; init; }
}

/// <summary>
/// The fields of a Hugging Face <c>config.json</c> that our architectures read, under one set of names
/// whatever the model family calls them (GPT-2's <c>n_embd</c> is <see cref="HiddenSize"/>, etc.).
/// </summary>
public sealed record ModelConfig
{
    public static readonly string[] SupportedTypes = ["llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "gemma3", "phi3", "gpt2", "bert"];

    public required string ModelType { get; init; }
    public string[] Architectures { get; init; } = [];
    public int VocabSize { get; init; }
    public int HiddenSize { get; init; }
    public int IntermediateSize { get; init; }
    public int NumLayers { get; init; }
    public int NumHeads { get; init; }
    public int NumKvHeads { get; init; }
    public int HeadDim { get; init; }
    public string HiddenAct { get; init; } = "silu";
    public double NormEps { get; init; } = 1e-6;
    public int MaxPositions { get; init; } = 2048;
    public bool TieWordEmbeddings { get; init; }
    public bool AttentionBias { get; init; }
    public bool MlpBias { get; init; }
    public double RopeTheta { get; init; } = 10000.0;
    public RopeScaling? RopeScaling { get; init; }
    public int? SlidingWindow { get; init; }
    /// <summary>Per layer, "full_attention" or "sliding_attention" (transformers' <c>layer_types</c>); null: every layer
    /// uses <see cref="SlidingWindow"/> if set.</summary>
    public string[]? LayerTypes { get; init; }
    /// <summary>RoPE of the sliding-window layers where it differs from the global one (Gemma 3's <c>rope_local_base_freq</c>).</summary>
    public double? LocalRopeTheta { get; init; }
    public RopeScaling? LocalRopeScaling { get; init; }
    /// <summary>Share of each head's channels that RoPE turns (Phi-4-mini: 0.75).</summary>
    public double PartialRotaryFactor { get; init; } = 1.0;
    /// <summary>Per-head RMSNorm of queries and keys before RoPE (Qwen3, Gemma 3).</summary>
    public bool QkNorm { get; init; }
    /// <summary>Attention scores are scaled by this^-0.5 instead of head_dim^-0.5 (Gemma's <c>query_pre_attn_scalar</c>).</summary>
    public double? QueryPreAttnScalar { get; init; }
    /// <summary>c * tanh(x / c) on attention scores / on the final logits (Gemma 2); null = off.</summary>
    public double? AttnLogitSoftcapping { get; init; }
    public double? FinalLogitSoftcapping { get; init; }
    public int TypeVocabSize { get; init; } = 2;
    public int NumLabels { get; init; } = 2;
    public int? BosTokenId { get; init; }
    public int[] EosTokenIds { get; init; } = [];
    public int? PadTokenId { get; init; }
    /// <summary>The whole config.json, written back unchanged (bar dtype) when saving a merged model.</summary>
    public JsonObject Raw { get; init; } = new();

    public string Architecture => Architectures.FirstOrDefault() ?? ModelType;

    /// <summary>Whether layer <paramref name="layer"/> attends through a sliding window.</summary>
    public bool IsSliding(int layer) =>
        SlidingWindow is not null && (LayerTypes is null || LayerTypes[layer] == "sliding_attention");

    public static ModelConfig Load(string folder)
    {
        var path = Path.Combine(folder, "config.json");
        if (!File.Exists(path)) IO.CheckpointFormat.RefuseIfPickleOnly(folder);
        if (!File.Exists(path)) throw new FileNotFoundException($"{folder}: no config.json (is this a Hugging Face model folder?)", path);
        IO.RegularFile.Require(path);
        JsonObject o;
        try { o = JsonNode.Parse(File.ReadAllText(path))?.AsObject() ?? throw new InvalidDataException("empty"); }
        catch (Exception e) when (e is System.Text.Json.JsonException or InvalidOperationException)
        { throw new InvalidDataException($"{path}: not a JSON object ({e.Message})", e); }
        try { return Parse(o); }
        catch (Exception e) when (e is not NotSupportedException)
        { throw new InvalidDataException($"{path}: {e.Message}", e); }
    }

    public static ModelConfig Parse(JsonObject o)
    {
        var type = Str(o, "model_type") ?? throw new InvalidDataException("config.json has no model_type");
        if (!SupportedTypes.Contains(type))
            throw new NotSupportedException($"model_type '{type}' is not supported; supported: {string.Join(", ", SupportedTypes)}");
        var archs = o["architectures"] is JsonArray a ? a.Select(x => x!.GetValue<string>()).ToArray() : [];
        return type switch
        {
            "gpt2" => ParseGpt2(o, archs),
            "bert" => ParseBert(o, archs),
            "gemma2" or "gemma3_text" => Gemma.GemmaConfig.Parse(o, type, archs),
            "gemma3" => Gemma.GemmaConfig.ParseNested(o, archs),
            "phi3" => Phi3.Phi3Config.Parse(o, archs),
            _ => ParseLlamaLike(o, type, archs),
        };
    }

    static ModelConfig ParseLlamaLike(JsonObject o, string type, string[] archs)
    {
        int hidden = Int(o, "hidden_size")!.Value, heads = Int(o, "num_attention_heads")!.Value;
        // Qwen2 and Mistral checkpoints only use the sliding window when asked to; Mistral v0.1 sets it always.
        int? window = Int(o, "sliding_window");
        bool qwen = type is "qwen2" or "qwen3";
        if (qwen && Bool(o, "use_sliding_window") != true) window = null;
        if (qwen && !o.ContainsKey("sliding_window") && Bool(o, "use_sliding_window") == true) window = 4096;
        int layers = Int(o, "num_hidden_layers")!.Value;
        return new ModelConfig
        {
            ModelType = type, Architectures = archs, Raw = o,
            VocabSize = Int(o, "vocab_size")!.Value, HiddenSize = hidden,
            IntermediateSize = Int(o, "intermediate_size")!.Value, NumLayers = layers,
            NumHeads = heads, NumKvHeads = Int(o, "num_key_value_heads") ?? heads,
            HeadDim = Int(o, "head_dim") ?? (type == "qwen3" ? 128 : hidden / heads), HiddenAct = Str(o, "hidden_act") ?? "silu",
            NormEps = Dbl(o, "rms_norm_eps") ?? 1e-6, MaxPositions = Int(o, "max_position_embeddings") ?? 2048,
            TieWordEmbeddings = Bool(o, "tie_word_embeddings") ?? false,
            AttentionBias = Bool(o, "attention_bias") ?? (type == "qwen2"), MlpBias = Bool(o, "mlp_bias") ?? false,
            RopeTheta = RopeThetaOf(o), RopeScaling = RopeScalingOf(o), SlidingWindow = window,
            LayerTypes = qwen ? QwenLayerTypes(o, window, layers) : null, QkNorm = type == "qwen3",
            BosTokenId = Int(o, "bos_token_id"), EosTokenIds = IntList(o, "eos_token_id"), PadTokenId = Int(o, "pad_token_id"),
        };
    }

    static ModelConfig ParseGpt2(JsonObject o, string[] archs)
    {
        int hidden = Int(o, "n_embd")!.Value, heads = Int(o, "n_head")!.Value;
        return new ModelConfig
        {
            ModelType = "gpt2", Architectures = archs, Raw = o,
            VocabSize = Int(o, "vocab_size")!.Value, HiddenSize = hidden, IntermediateSize = Int(o, "n_inner") ?? 4 * hidden,
            NumLayers = Int(o, "n_layer")!.Value, NumHeads = heads, NumKvHeads = heads, HeadDim = hidden / heads,
            HiddenAct = Str(o, "activation_function") ?? "gelu_new", NormEps = Dbl(o, "layer_norm_epsilon") ?? 1e-5,
            MaxPositions = Int(o, "n_positions") ?? 1024, TieWordEmbeddings = Bool(o, "tie_word_embeddings") ?? true,
            AttentionBias = true, MlpBias = true,
            BosTokenId = Int(o, "bos_token_id"), EosTokenIds = IntList(o, "eos_token_id"), PadTokenId = Int(o, "pad_token_id"),
        };
    }

    static ModelConfig ParseBert(JsonObject o, string[] archs)
    {
        int hidden = Int(o, "hidden_size")!.Value, heads = Int(o, "num_attention_heads")!.Value;
        int labels = o["id2label"] is JsonObject l ? l.Count : Int(o, "num_labels") ?? 2;
        return new ModelConfig
        {
            ModelType = "bert", Architectures = archs, Raw = o,
            VocabSize = Int(o, "vocab_size")!.Value, HiddenSize = hidden, IntermediateSize = Int(o, "intermediate_size")!.Value,
            NumLayers = Int(o, "num_hidden_layers")!.Value, NumHeads = heads, NumKvHeads = heads, HeadDim = hidden / heads,
            HiddenAct = Str(o, "hidden_act") ?? "gelu", NormEps = Dbl(o, "layer_norm_eps") ?? 1e-12,
            MaxPositions = Int(o, "max_position_embeddings") ?? 512, TypeVocabSize = Int(o, "type_vocab_size") ?? 2,
            NumLabels = labels, AttentionBias = true, MlpBias = true, PadTokenId = Int(o, "pad_token_id"),
        };
    }

    // Qwen2/3: layers from max_window_layers on slide (when the window is on), unless layer_types says otherwise.
    static string[] QwenLayerTypes(JsonObject o, int? window, int layers) =>
        LayerTypesOf(o, layers) ?? Enumerable.Range(0, layers)
            .Select(i => window is not null && i >= (Int(o, "max_window_layers") ?? 28) ? "sliding_attention" : "full_attention").ToArray();

    internal static string[]? LayerTypesOf(JsonObject o, int layers)
    {
        if (o["layer_types"] is not JsonArray a) return null;
        var types = a.Select(x => x!.GetValue<string>()).ToArray();
        if (types.Length != layers) throw new InvalidDataException($"layer_types has {types.Length} entries but num_hidden_layers is {layers}");
        foreach (var t in types)
            if (t is not ("full_attention" or "sliding_attention"))
                throw new NotSupportedException($"layer_types entry '{t}' is not supported (only full_attention, sliding_attention)");
        return types;
    }

    /// <summary>The rope dict of 5.x (<c>rope_parameters</c>, possibly one per layer type) or 4.x (<c>rope_scaling</c>).</summary>
    internal static JsonObject? RopeDict(JsonObject o, string? layerType = null)
    {
        if (o["rope_parameters"] is JsonObject p)
        {
            bool perType = p.Count > 0 && p.All(kv => kv.Key is "full_attention" or "sliding_attention");
            return perType ? (layerType is null ? null : p[layerType] as JsonObject) : p;
        }
        return o["rope_scaling"] as JsonObject;
    }

    static double RopeThetaOf(JsonObject o) =>
        (o["rope_parameters"] as JsonObject) is { } p && Dbl(p, "rope_theta") is { } t ? t : Dbl(o, "rope_theta") ?? 10000.0;

    static RopeScaling? RopeScalingOf(JsonObject o) => RopeScalingOf(o, RopeDict(o));

    /// <summary>The scaling a rope dict <paramref name="s"/> asks for; null for plain RoPE.</summary>
    internal static RopeScaling? RopeScalingOf(JsonObject o, JsonObject? s)
    {
        if (s is null) return null;
        var type = Str(s, "rope_type") ?? Str(s, "type") ?? "default";
        if (type == "su") type = "longrope"; // Phi-3's first configs
        if (type == "default") return null;
        if (type is not ("linear" or "dynamic" or "llama3" or "longrope"))
            throw new NotSupportedException($"rope type '{type}' is not supported; supported: default, linear, dynamic, llama3, longrope");
        var scaling = new RopeScaling(type, Dbl(s, "factor") ?? 1.0, Dbl(s, "low_freq_factor") ?? 1.0, Dbl(s, "high_freq_factor") ?? 4.0,
            Int(s, "original_max_position_embeddings"));
        return type == "longrope" ? LongRope(o, s, scaling) : scaling;
    }

    // As transformers: the top-level original_max_position_embeddings (Phi-3) wins over the dict's; factor defaults to
    // max_position_embeddings / original; the attention factor to sqrt(1 + ln(factor) / ln(original)).
    static RopeScaling LongRope(JsonObject o, JsonObject s, RopeScaling r)
    {
        int max = Int(o, "max_position_embeddings") ?? 2048;
        int orig = Int(o, "original_max_position_embeddings") ?? r.OriginalMaxPositionEmbeddings ?? max;
        double factor = Dbl(s, "factor") ?? (double)max / orig;
        double attention = Dbl(s, "attention_factor") ?? (factor <= 1.0 ? 1.0 : Math.Sqrt(1 + Math.Log(factor) / Math.Log(orig)));
        double[] Factors(string key) => s[key] is JsonArray a ? a.Select(x => x!.GetValue<double>()).ToArray()
            : throw new InvalidDataException($"longrope scaling needs '{key}' (a list of numbers)");
        return r with
        {
            Factor = factor, OriginalMaxPositionEmbeddings = orig, AttentionFactor = attention,
            ShortFactor = Factors("short_factor"), LongFactor = Factors("long_factor"),
        };
    }

    internal static string? Str(JsonObject o, string k) => o[k] is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;
    internal static int? Int(JsonObject o, string k) => o[k] is JsonValue v && v.TryGetValue<double>(out var d) ? (int)d : null;
    internal static double? Dbl(JsonObject o, string k) => o[k] is JsonValue v && v.TryGetValue<double>(out var d) ? d : null;
    internal static bool? Bool(JsonObject o, string k) => o[k] is JsonValue v && v.TryGetValue<bool>(out var b) ? b : null;
    static int[] IntList(JsonObject o, string k) =>
        o[k] is JsonArray a ? a.Select(x => (int)x!.GetValue<double>()).ToArray() : Int(o, k) is { } i ? [i] : [];

    /// <summary>bos/eos/pad ids, shared by every family's parser.</summary>
    internal static ModelConfig WithTokenIds(ModelConfig c, JsonObject o) => c with
    {
        BosTokenId = Int(o, "bos_token_id"), EosTokenIds = IntList(o, "eos_token_id"), PadTokenId = Int(o, "pad_token_id"),
    };
}
