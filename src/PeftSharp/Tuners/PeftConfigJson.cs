using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using PeftSharp.IO;

namespace PeftSharp.Tuners;

/// <summary>Reading and writing <c>adapter_config.json</c>, dispatching on <c>peft_type</c> through the registry.</summary>
public static class PeftConfigJson
{
    public const string FileName = "adapter_config.json";
    public const string PeftVersion = "0.21.0";

    public static readonly JsonSerializerOptions Options = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    /// <summary>Where warnings about unknown keys go (stderr by default).</summary>
    public static Action<string> Warn { get; set; } = m => Console.Error.WriteLine("warning: " + m);

    public static PeftConfig Parse(string json, string source = "adapter_config.json")
    {
        JsonObject o;
        try { o = JsonNode.Parse(json)?.AsObject() ?? throw new JsonException("empty document"); }
        catch (Exception e) when (e is JsonException or InvalidOperationException)
        { throw new InvalidDataException($"{source}: not a JSON object ({e.Message})", e); }
        if (o["peft_type"] is null) throw new InvalidDataException($"{source}: no \"peft_type\"; is this a PEFT adapter_config.json?");
        if (o["peft_type"] is not JsonValue v || !v.TryGetValue<string>(out var type))
            throw new InvalidDataException($"{source}: \"peft_type\" must be a string such as \"LORA\", not {o["peft_type"]!.ToJsonString()}");
        var tuner = TunerRegistry.Find(type)
            ?? throw new NotSupportedException($"{source}: peft_type '{type}' is not supported; supported: {string.Join(", ", TunerRegistry.Names)}");
        PeftConfig config;
        try { config = (PeftConfig)o.Deserialize(tuner.ConfigType, Options)!; }
        catch (JsonException e) { throw new InvalidDataException($"{source}: {e.Message}", e); }
        if (config is LayerTunerConfig layered)
        {
            CheckPattern(layered.TargetModules, "target_modules", source);
            CheckPattern(layered.ExcludeModules, "exclude_modules", source);
        }
        var refused = config.Extra?.Where(kv => tuner.UnsupportedKeys.Contains(kv.Key) && !IsUnset(kv.Value)).ToList() ?? [];
        if (refused.Count > 0)
            throw new NotSupportedException($"{source}: {string.Join(", ", refused.Select(kv => $"\"{kv.Key}\": {kv.Value.GetRawText()}"))}: " +
                $"PeftSharp does not implement {(refused.Count == 1 ? "this option" : "these options")} of {type}, and ignoring it would change " +
                "what the adapter computes; use Python PEFT for this adapter, or set it to null/false if it was not trained with it");
        var unknown = config.Extra?.Keys.Where(k => !tuner.KnownUnusedKeys.Contains(k) && !tuner.UnsupportedKeys.Contains(k) && k != "peft_type").ToList() ?? [];
        if (unknown.Count > 0)
            Warn($"{source}: ignoring keys PeftSharp does not know (newer PEFT?): {string.Join(", ", unknown)}");
        return config;
    }

    // PEFT matches a string selector as a whole-path regex; a broken one is the file's fault, not the model's.
    static void CheckPattern(ModuleSelector? selector, string key, string source)
    {
        if (selector?.Regex is not { } re) return;
        try { _ = new System.Text.RegularExpressions.Regex($"^(?:{re})$"); }
        catch (ArgumentException e) { throw new InvalidDataException($"{source}: {key} \"{re}\" is not a valid regular expression ({e.Message})", e); }
    }

    // PEFT writes an option it was not given as null, false or an empty list or dict.
    static bool IsUnset(JsonElement v) => v.ValueKind switch
    {
        JsonValueKind.Null or JsonValueKind.False or JsonValueKind.Undefined => true,
        JsonValueKind.Array => v.GetArrayLength() == 0,
        JsonValueKind.Object => !v.EnumerateObject().Any(),
        _ => false,
    };

    public static PeftConfig Load(string path)
    {
        if (!File.Exists(path)) IO.CheckpointFormat.RefuseIfPickleOnly(Path.GetDirectoryName(path) ?? ".");
        if (!File.Exists(path)) throw new FileNotFoundException($"no {FileName} at {path}", path);
        IO.RegularFile.Require(path);
        return Parse(File.ReadAllText(path), path);
    }

    public static string Serialize(PeftConfig config)
    {
        var node = JsonSerializer.SerializeToNode(config, config.GetType(), Options)!.AsObject();
        // peft_type first, as PEFT writes it sorted; keep the rest sorted too for stable diffs.
        var sorted = new JsonObject();
        foreach (var kv in node.OrderBy(kv => kv.Key, StringComparer.Ordinal)) sorted[kv.Key] = kv.Value?.DeepClone();
        return sorted.ToJsonString(Options);
    }

    public static void Save(PeftConfig config, string folder) =>
        AtomicFile.WriteAllText(Path.Combine(folder, FileName), Serialize(config));
}
