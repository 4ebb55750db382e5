using System.Text.Json.Nodes;

namespace PeftSharp.Models;

/// <summary>RoPE frequency scaling from <c>rope_scaling</c> (transformers 4.x) or <c>rope_parameters</c> (5.x).</summary>
public sealed record RopeScaling(string Type, double Factor = 1.0, double LowFreqFactor = 1.0, double HighFreqFactor = 4.0,
    int? OriginalMaxPositionEmbeddings = null);

/// <summary>
/// The fields of a Hugging Face <c>config.json</c> that our architectures read, under one set of names
/// whatever the model family calls them (GPT-2's <c>n_embd</c> is <see cref="HiddenSize"/>, etc.).
/// </summary>
public sealed record ModelConfig
{
    public static readonly string[] SupportedTypes = ["llama", "mistral", "qwen2", "gpt2", "bert"];

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
    public int TypeVocabSize { get; init; } = 2;
    public int NumLabels { get; init; } = 2;
    public int? BosTokenId { get; init; }
    public int[] EosTokenIds { get; init; } = [];
    public int? PadTokenId { get; init; }
    /// <summary>The whole config.json, written back unchanged (bar dtype) when saving a merged model.</summary>
    public JsonObject Raw { get; init; } = new();

    public string Architecture => Architectures.FirstOrDefault() ?? ModelType;

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
        return type == "gpt2" ? ParseGpt2(o, archs) : type == "bert" ? ParseBert(o, archs) : ParseLlamaLike(o, type, archs);
    }

    static ModelConfig ParseLlamaLike(JsonObject o, string type, string[] archs)
    {
        int hidden = Int(o, "hidden_size")!.Value, heads = Int(o, "num_attention_heads")!.Value;
        // Qwen2 and Mistral checkpoints only use the sliding window when asked to; Mistral v0.1 sets it always.
        int? window = Int(o, "sliding_window");
        if (type == "qwen2" && o["use_sliding_window"]?.GetValue<bool>() != true) window = null;
        return new ModelConfig
        {
            ModelType = type, Architectures = archs, Raw = o,
            VocabSize = Int(o, "vocab_size")!.Value, HiddenSize = hidden,
            IntermediateSize = Int(o, "intermediate_size")!.Value, NumLayers = Int(o, "num_hidden_layers")!.Value,
            NumHeads = heads, NumKvHeads = Int(o, "num_key_value_heads") ?? heads,
            HeadDim = Int(o, "head_dim") ?? hidden / heads, HiddenAct = Str(o, "hidden_act") ?? "silu",
            NormEps = Dbl(o, "rms_norm_eps") ?? 1e-6, MaxPositions = Int(o, "max_position_embeddings") ?? 2048,
            TieWordEmbeddings = Bool(o, "tie_word_embeddings") ?? false,
            AttentionBias = Bool(o, "attention_bias") ?? (type == "qwen2"), MlpBias = Bool(o, "mlp_bias") ?? false,
            RopeTheta = RopeThetaOf(o), RopeScaling = RopeScalingOf(o), SlidingWindow = window,
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

    static double RopeThetaOf(JsonObject o) =>
        (o["rope_parameters"] as JsonObject) is { } p && Dbl(p, "rope_theta") is { } t ? t : Dbl(o, "rope_theta") ?? 10000.0;

    static RopeScaling? RopeScalingOf(JsonObject o)
    {
        var s = o["rope_parameters"] as JsonObject ?? o["rope_scaling"] as JsonObject;
        if (s is null) return null;
        var type = Str(s, "rope_type") ?? Str(s, "type") ?? "default";
        if (type == "default") return null;
        if (type is not ("linear" or "dynamic" or "llama3"))
            throw new NotSupportedException($"rope type '{type}' is not supported; supported: default, linear, dynamic, llama3");
        return new RopeScaling(type, Dbl(s, "factor") ?? 1.0, Dbl(s, "low_freq_factor") ?? 1.0, Dbl(s, "high_freq_factor") ?? 4.0,
            Int(s, "original_max_position_embeddings"));
    }

    static string? Str(JsonObject o, string k) => o[k] is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;
    static int? Int(JsonObject o, string k) => o[k] is JsonValue v && v.TryGetValue<double>(out var d) ? (int)d : null;
    static double? Dbl(JsonObject o, string k) => o[k] is JsonValue v && v.TryGetValue<double>(out var d) ? d : null;
    static bool? Bool(JsonObject o, string k) => o[k] is JsonValue v && v.TryGetValue<bool>(out var b) ? b : null;
    static int[] IntList(JsonObject o, string k) =>
        o[k] is JsonArray a ? a.Select(x => (int)x!.GetValue<double>()).ToArray() : Int(o, k) is { } i ? [i] : [];
}
