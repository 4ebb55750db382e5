using System.Text.Json;
using static TorchSharp.torch;

namespace PeftSharp.IO;

/// <summary>
/// The weights of a Hugging Face checkpoint folder: one <c>model.safetensors</c>, or shards listed by
/// <c>model.safetensors.index.json</c>. Tensors are read by name on demand, one at a time.
/// </summary>
public sealed class Checkpoint : IDisposable
{
    public const string SingleFile = "model.safetensors";
    public const string IndexFile = "model.safetensors.index.json";

    readonly Dictionary<string, SafetensorsFile> byTensor = new();
    readonly List<SafetensorsFile> files = new();

    public string Folder { get; }
    public IReadOnlyCollection<string> Names => byTensor.Keys;
    public IReadOnlyList<SafetensorsFile> Files => files;

    Checkpoint(string folder) => Folder = folder;

    /// <summary>Opens a folder, or a single .safetensors file.</summary>
    public static Checkpoint Open(string path, string? weightsName = null)
    {
        if (File.Exists(path))
        {
            var c = new Checkpoint(Path.GetDirectoryName(Path.GetFullPath(path))!);
            c.Add(SafetensorsFile.Open(path));
            return c;
        }
        if (!Directory.Exists(path)) throw new DirectoryNotFoundException($"checkpoint folder not found: {path}");
        var ckpt = new Checkpoint(path);
        try
        {
            var single = Path.Combine(path, weightsName ?? SingleFile);
            var index = Path.Combine(path, (weightsName ?? SingleFile) + ".index.json");
            if (File.Exists(single)) ckpt.Add(SafetensorsFile.Open(single));
            else if (File.Exists(index)) ckpt.OpenShards(index);
            else
            {
                CheckpointFormat.RefuseIfPickleOnly(path);
                throw new FileNotFoundException($"{path}: neither {SingleFile} nor {IndexFile} is there");
            }
            return ckpt;
        }
        catch
        {
            ckpt.Dispose();
            throw;
        }
    }

    void OpenShards(string indexPath)
    {
        RegularFile.Require(indexPath);
        JsonDocument doc;
        try { doc = JsonDocument.Parse(File.ReadAllBytes(indexPath), new JsonDocumentOptions { AllowDuplicateProperties = false }); }
        catch (JsonException e) { throw new SafetensorsException(indexPath, $"not valid JSON ({e.Message})"); }
        using var _ = doc;
        if (doc.RootElement.ValueKind != JsonValueKind.Object)
            throw new SafetensorsException(indexPath, $"is a JSON {doc.RootElement.ValueKind.ToString().ToLowerInvariant()}, not an object with a \"weight_map\"");
        if (!doc.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
            throw new SafetensorsException(indexPath, "no \"weight_map\" object");
        var opened = new Dictionary<string, SafetensorsFile>();
        foreach (var entry in map.EnumerateObject())
        {
            if (entry.Value.ValueKind != JsonValueKind.String)
                throw new SafetensorsException(indexPath, $"tensor '{entry.Name}' maps to {entry.Value.ValueKind.ToString().ToLowerInvariant()} {entry.Value.GetRawText()}, not a shard file name");
            var shard = entry.Value.GetString()!;
            if (!opened.TryGetValue(shard, out var file))
            {
                file = SafetensorsFile.Open(ShardPath(indexPath, shard));
                opened[shard] = file;
                files.Add(file);
            }
            if (!file.Contains(entry.Name))
                throw new SafetensorsException(indexPath, $"tensor '{entry.Name}' is mapped to {shard}, which does not contain it");
            byTensor[entry.Name] = file;
        }
    }

    // Shards may sit in a sub-folder of the checkpoint folder, never outside it (no absolute paths, no "..").
    string ShardPath(string indexPath, string shard)
    {
        var root = Path.GetFullPath(Folder).TrimEnd(Path.DirectorySeparatorChar) + Path.DirectorySeparatorChar;
        if (shard.Length == 0 || shard.Contains('\0'))
            throw new SafetensorsException(indexPath, $"shard name '{shard}' is not a file name");
        var full = Path.GetFullPath(Path.Combine(root, shard));
        if (Path.IsPathRooted(shard) || !full.StartsWith(root, StringComparison.Ordinal))
            throw new SafetensorsException(indexPath, $"shard name '{shard}' points outside the checkpoint folder");
        if (!File.Exists(full) && !Directory.Exists(full)) throw new SafetensorsException(indexPath, $"shard '{shard}' is missing");
        return full;
    }

    void Add(SafetensorsFile file)
    {
        files.Add(file);
        foreach (var n in file.Names) byTensor[n] = file;
    }

    public bool Contains(string name) => byTensor.ContainsKey(name);

    public TensorInfo Info(string name) => FileOf(name).Info(name);

    public Tensor Load(string name) => FileOf(name).Load(name);

    /// <summary>Copies one stored tensor into <paramref name="destination"/> (same shape), casting when dtypes differ.</summary>
    public void LoadInto(string name, Tensor destination) => FileOf(name).LoadInto(name, destination);

    /// <summary>The file that holds <paramref name="name"/>, for messages.</summary>
    public string PathOf(string name) => FileOf(name).Path;

    public Dictionary<string, Tensor> LoadAll(Func<string, bool>? filter = null)
    {
        var result = new Dictionary<string, Tensor>();
        foreach (var n in byTensor.Keys)
            if (filter is null || filter(n)) result[n] = Load(n);
        return result;
    }

    SafetensorsFile FileOf(string name) =>
        byTensor.TryGetValue(name, out var f) ? f : throw new KeyNotFoundException($"{Folder}: checkpoint has no tensor '{name}'");

    public void Dispose()
    {
        foreach (var f in files) f.Dispose();
    }
}
