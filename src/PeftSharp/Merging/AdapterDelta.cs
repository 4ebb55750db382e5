using System.Text.Json;
using System.Text.RegularExpressions;
using PeftSharp.IO;
using static TorchSharp.torch;

namespace PeftSharp.Merging;

/// <summary>
/// A PEFT LoRA adapter folder read as the delta weights it adds to its base model, so that it can be merged like a
/// fine-tuned model: for each targeted module, <c>delta(module.weight) = scaling * B @ A</c> with
/// <c>scaling = lora_alpha / r</c> (<c>lora_alpha / sqrt(r)</c> with <c>use_rslora</c>), transposed for
/// <c>fan_in_fan_out</c> layers and embeddings; <c>modules_to_save</c> tensors replace the base tensor outright.
/// A sparse delta (SPARSE_FT, PEFT's SHIRA) is a task vector already: <c>delta(module.weight) = scatter(indices, values)</c>.
/// </summary>
public sealed class AdapterDelta : IDisposable
{
    public const string ConfigFile = "adapter_config.json";
    public const string WeightsFile = "adapter_model.safetensors";
    const string Prefix = "base_model.model.";

    readonly SafetensorsFile file;
    readonly Dictionary<string, Pair> lora = new();       // base tensor name -> its LoRA factors
    readonly Dictionary<string, string> replaced = new(); // base tensor name -> key of a saved full tensor
    readonly Dictionary<string, SparseKeys> sparse = new(); // base tensor name -> its sparse delta's tensors

    sealed record SparseKeys(string Indices, string Values, bool Shira);

    sealed record Pair(string Module, string A, string B, bool Embedding, double Scaling);

    public string Folder { get; }
    public bool FanInFanOut { get; }
    public string? TaskType { get; }

    /// <summary>Names of the modules that have LoRA factors (not those in modules_to_save).</summary>
    public IEnumerable<string> LoraModules => lora.Values.Select(p => p.Module);

    /// <summary>Names of the base tensors this adapter changes.</summary>
    public IEnumerable<string> Targets => lora.Keys.Concat(replaced.Keys).Concat(sparse.Keys);

    public static bool IsAdapter(string path) => File.Exists(Path.Combine(path, ConfigFile));

    AdapterDelta(string folder, SafetensorsFile file, bool fanInFanOut, string? taskType)
    {
        Folder = folder;
        this.file = file;
        FanInFanOut = fanInFanOut;
        TaskType = taskType;
    }

    public static AdapterDelta Open(string folder)
    {
        var configPath = Path.Combine(folder, ConfigFile);
        if (!File.Exists(configPath)) CheckpointFormat.RefuseIfPickleOnly(folder);
        if (!File.Exists(configPath)) throw new MergeException($"{folder}: no {ConfigFile}, so this is not a PEFT adapter folder");
        RegularFile.Require(configPath);
        using var doc = JsonDocument.Parse(File.ReadAllText(configPath));
        var c = doc.RootElement;
        var peftType = Str(c, "peft_type") ?? "LORA";
        if (peftType is not ("LORA" or "SPARSE_FT" or "SHIRA"))
            throw new MergeException($"{configPath}: peft_type {peftType} cannot be merged as a task vector yet; only LoRA adapters can " +
                "and sparse deltas (SPARSE_FT, SHIRA) can (merge_and_unload it in PEFT and merge the resulting model instead)");
        if (c.TryGetProperty("use_dora", out var dora) && dora.ValueKind == JsonValueKind.True)
            throw new MergeException($"{configPath}: DoRA adapters are not supported as merge inputs: their delta depends on the " +
                "base weight norm. merge_and_unload the adapter and merge the resulting model instead");
        double alpha = Num(c, "lora_alpha") ?? 8;
        bool rslora = c.TryGetProperty("use_rslora", out var rs) && rs.ValueKind == JsonValueKind.True;
        var alphaPattern = Patterns(c, "alpha_pattern");

        var weightsPath = Path.Combine(folder, WeightsFile);
        if (!File.Exists(weightsPath)) CheckpointFormat.RefuseIfPickleOnly(folder);
        if (!File.Exists(weightsPath)) throw new MergeException($"{folder}: {WeightsFile} is missing");
        var file = SafetensorsFile.Open(weightsPath);
        var adapter = new AdapterDelta(folder, file, c.TryGetProperty("fan_in_fan_out", out var f) && f.ValueKind == JsonValueKind.True,
            Str(c, "task_type"));
        try
        {
            adapter.Index(alpha, rslora, alphaPattern);
            return adapter;
        }
        catch
        {
            adapter.Dispose();
            throw;
        }
    }

    void Index(double alpha, bool rslora, Dictionary<string, double> alphaPattern)
    {
        foreach (var key in file.Names)
        {
            if (!key.StartsWith(Prefix, StringComparison.Ordinal))
                throw new MergeException($"{file.Path}: tensor '{key}' does not start with '{Prefix}'; is this a PEFT adapter?");
            var name = key[Prefix.Length..];
            string? module = null;
            bool embedding = false;
            if (SparseSuffixes.FirstOrDefault(s => name.EndsWith(s.Values, StringComparison.Ordinal)) is { Values: not null } sp)
            {
                var owner = name[..^sp.Values.Length];
                var indices = Prefix + owner + sp.Indices;
                if (!file.Contains(indices)) throw new MergeException($"{file.Path}: '{key}' has no matching '{indices}'");
                sparse[owner + ".weight"] = new SparseKeys(indices, key, sp.Shira);
                continue;
            }
            if (SparseSuffixes.Any(s => name.EndsWith(s.Indices, StringComparison.Ordinal))) continue;
            if (name.EndsWith(".lora_A.weight", StringComparison.Ordinal)) module = name[..^".lora_A.weight".Length];
            else if (name.EndsWith(".lora_embedding_A", StringComparison.Ordinal)) { module = name[..^".lora_embedding_A".Length]; embedding = true; }
            else if (name.EndsWith(".lora_B.weight", StringComparison.Ordinal) || name.EndsWith(".lora_embedding_B", StringComparison.Ordinal)) continue;
            else if (name.Contains("lora_", StringComparison.Ordinal))
                throw new MergeException($"{file.Path}: tensor '{key}' is a LoRA variant this reader does not know (DoRA, lora_bias, ...)");
            else { replaced[name] = key; continue; }

            var a = key;
            var b = Prefix + module + (embedding ? ".lora_embedding_B" : ".lora_B.weight");
            if (!file.Contains(b)) throw new MergeException($"{file.Path}: '{a}' has no matching '{b}'");
            var shapeA = file.Info(a).Shape;
            if (shapeA.Length != 2)
                throw new MergeException($"{file.Path}: module '{module}' has lora_A of shape [{string.Join(",", shapeA)}]; only Linear, Conv1D and Embedding LoRA can be merged");
            long r = shapeA[0];
            double moduleAlpha = PatternValue(alphaPattern, module) ?? alpha;
            double scaling = rslora ? moduleAlpha / Math.Sqrt(r) : moduleAlpha / r;
            lora[module + ".weight"] = new Pair(module, a, b, embedding, scaling);
        }
    }

    /// <summary>The safetensors keys of a LoRA module's factors and its scaling, or null when the module has none.</summary>
    internal (string A, string B, bool Embedding, double Scaling)? LoraFactors(string baseTensor) =>
        lora.TryGetValue(baseTensor, out var p) ? (p.A, p.B, p.Embedding, p.Scaling) : null;

    static readonly (string Values, string Indices, bool Shira)[] SparseSuffixes =
        [(".sparse_ft_values", ".sparse_ft_indices", false), (".shira_weight", ".shira_indices", true)];

    public bool Changes(string baseTensor) => lora.ContainsKey(baseTensor) || replaced.ContainsKey(baseTensor) || sparse.ContainsKey(baseTensor);

    /// <summary>
    /// The change this adapter makes to <paramref name="baseTensor"/> (float32, the base tensor's shape), or null when it
    /// leaves it alone. <paramref name="baseWeight"/> is needed for <c>modules_to_save</c> and to check shapes.
    /// </summary>
    public Tensor? Delta(string baseTensor, Tensor baseWeight)
    {
        using var scope = NewDisposeScope();
        Tensor delta;
        if (replaced.TryGetValue(baseTensor, out var key))
        {
            delta = file.Load(key).to(ScalarType.Float32) - baseWeight.to(ScalarType.Float32);
        }
        else if (lora.TryGetValue(baseTensor, out var p))
        {
            var a = file.Load(p.A).to(ScalarType.Float32);  // [r, in]   (embeddings: [r, num_embeddings])
            var b = file.Load(p.B).to(ScalarType.Float32);  // [out, r]  (embeddings: [dim, r])
            delta = b.matmul(a).mul_(p.Scaling);            // [out, in]
            if (FanInFanOut || p.Embedding) delta = delta.t();
        }
        else if (sparse.TryGetValue(baseTensor, out var s)) delta = SparseDelta(s, baseWeight);
        else return null;
        if (!delta.shape.SequenceEqual(baseWeight.shape))
            throw new MergeException($"adapter {Folder}: '{baseTensor}' would change by a delta of shape [{string.Join(",", delta.shape)}] " +
                $"but the base tensor is [{string.Join(",", baseWeight.shape)}]: is this adapter for another model?");
        return delta.contiguous().MoveToOuterDisposeScope();
    }

    // Flat indices into the weight as stored (SHiRA: int32 [2, K] rows and columns of a Linear [out, in]).
    Tensor SparseDelta(SparseKeys s, Tensor baseWeight)
    {
        var indices = file.Load(s.Indices).to(ScalarType.Int64);
        var values = file.Load(s.Values).to(ScalarType.Float32);
        long numel = baseWeight.numel();
        var flat = s.Shira && indices.dim() == 2 && indices.shape[0] == 2 && baseWeight.dim() == 2 ? indices[0] * baseWeight.shape[1] + indices[1] : indices;
        if (flat.dim() != 1 || flat.shape[0] != values.shape[0])
            throw new MergeException($"{file.Path}: '{s.Indices}' has shape [{string.Join(",", indices.shape)}] for {values.shape[0]} values in '{s.Values}'");
        if (flat.shape[0] > 0 && (flat.min().item<long>() < 0 || flat.max().item<long>() >= numel))
            throw new MergeException($"{file.Path}: '{s.Indices}' has indices outside the base tensor [{string.Join(",", baseWeight.shape)}]: is this adapter for another model?");
        return zeros(numel, dtype: ScalarType.Float32).index_put_(values, flat).view(baseWeight.shape);
    }

    // PEFT's get_pattern_key: the first pattern p such that the module name matches (.*\.)?(p)$.
    static double? PatternValue(Dictionary<string, double> patterns, string module)
    {
        foreach (var (pattern, value) in patterns)
            if (Regex.IsMatch(module, $@"^(.*\.)?({pattern})$", RegexOptions.None, TimeSpan.FromSeconds(1))) return value;
        return null;
    }

    static Dictionary<string, double> Patterns(JsonElement c, string name)
    {
        var result = new Dictionary<string, double>();
        if (c.TryGetProperty(name, out var p) && p.ValueKind == JsonValueKind.Object)
            foreach (var e in p.EnumerateObject())
                if (e.Value.TryGetDouble(out var v)) result[e.Name] = v;
        return result;
    }

    static string? Str(JsonElement c, string name) => c.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
    static double? Num(JsonElement c, string name) => c.TryGetProperty(name, out var v) && v.TryGetDouble(out var d) ? d : null;

    public void Dispose() => file.Dispose();
}
