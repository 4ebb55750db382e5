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
                var pickles = Directory.GetFiles(path).Where(f => f.EndsWith(".bin") || f.EndsWith(".pt")).ToArray();
                if (pickles.Length > 0) CheckpointFormat.RefusePickle(pickles[0]);
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
        JsonDocument doc;
        try { doc = JsonDocument.Parse(File.ReadAllBytes(indexPath)); }
        catch (JsonException e) { throw new SafetensorsException(indexPath, $"not valid JSON ({e.Message})"); }
        using var _ = doc;
        if (!doc.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
            throw new SafetensorsException(indexPath, "no \"weight_map\" object");
        var opened = new Dictionary<string, SafetensorsFile>();
        var root = Path.GetFullPath(Folder);
        foreach (var entry in map.EnumerateObject())
        {
            var shard = entry.Value.GetString() ?? throw new SafetensorsException(indexPath, $"'{entry.Name}' maps to a non-string");
            if (!opened.TryGetValue(shard, out var file))
            {
                var full = Path.GetFullPath(Path.Combine(root, shard));
                if (Path.IsPathRooted(shard) || Path.GetDirectoryName(full) != root.TrimEnd(Path.DirectorySeparatorChar))
                    throw new SafetensorsException(indexPath, $"shard name '{shard}' points outside the checkpoint folder");
                if (!File.Exists(full)) throw new SafetensorsException(indexPath, $"shard '{shard}' is missing");
                file = SafetensorsFile.Open(full);
                opened[shard] = file;
                files.Add(file);
            }
            if (!file.Contains(entry.Name))
                throw new SafetensorsException(indexPath, $"tensor '{entry.Name}' is mapped to {shard}, which does not contain it");
            byTensor[entry.Name] = file;
        }
    }

    void Add(SafetensorsFile file)
    {
        files.Add(file);
        foreach (var n in file.Names) byTensor[n] = file;
    }

    public bool Contains(string name) => byTensor.ContainsKey(name);

    public TensorInfo Info(string name) => FileOf(name).Info(name);

    public Tensor Load(string name) => FileOf(name).Load(name);

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
