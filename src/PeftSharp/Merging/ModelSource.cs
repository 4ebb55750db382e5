using PeftSharp.IO;
using static TorchSharp.torch;

namespace PeftSharp.Merging;

/// <summary>
/// One input of a merge, read tensor by tensor: a checkpoint (folder or .safetensors file), or a LoRA adapter on top
/// of another source (its <see cref="Under"/>), whose weights are then <c>under + delta</c>.
/// </summary>
internal sealed class ModelSource : IDisposable
{
    readonly Checkpoint? weights;
    readonly AdapterDelta? adapter;

    /// <summary>As written in the config, for messages.</summary>
    public string Reference { get; }

    /// <summary>Where config.json and tokenizer files are (a checkpoint folder), or null.</summary>
    public string? Folder { get; }

    /// <summary>For an adapter: the model it applies to.</summary>
    public ModelSource? Under { get; }

    public AdapterDelta? Adapter => adapter;

    ModelSource(string reference, Checkpoint? weights, AdapterDelta? adapter, ModelSource? under, string? folder)
    {
        Reference = reference;
        this.weights = weights;
        this.adapter = adapter;
        Under = under;
        Folder = folder;
    }

    public static ModelSource Checkpoint(string reference, string path)
    {
        var folder = Directory.Exists(path) ? path : Path.GetDirectoryName(Path.GetFullPath(path));
        try { return new ModelSource(reference, IO.Checkpoint.Open(path), null, null, folder); }
        catch (Exception e) when (e is IOException or SafetensorsException)
        {
            throw new MergeException($"model '{reference}': {e.Message}");
        }
    }

    public static ModelSource WithAdapter(string reference, string adapterFolder, ModelSource under) =>
        new(reference, null, AdapterDelta.Open(adapterFolder), under, null);

    public IEnumerable<string> Names => weights?.Names ?? Under!.Names;

    public bool Contains(string name) => weights?.Contains(name) ?? Under!.Contains(name);

    public long[] Shape(string name) => weights?.Info(name).Shape ?? Under!.Shape(name);

    public ScalarType DType(string name) => weights?.Info(name).DType ?? Under!.DType(name);

    public long Bytes(string name) => weights?.Info(name).ByteLength ?? Under!.Bytes(name);

    /// <summary>The full weight, in its stored dtype (an adapter's changes in float32).</summary>
    public Tensor Load(string name)
    {
        if (weights is not null) return weights.Load(name);
        using var scope = NewDisposeScope();
        var under = Under!.Load(name);
        var delta = adapter!.Delta(name, under);
        return (delta is null ? under : under.to(ScalarType.Float32) + delta).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// This model's task vector for one tensor against <paramref name="origin"/> (the model it was fine-tuned from),
    /// in <paramref name="dtype"/>. An adapter over that very origin gives its delta directly, without a subtraction.
    /// </summary>
    public Tensor TaskVector(string name, ModelSource origin, Tensor originWeight, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        Tensor tv;
        if (adapter is not null && ReferenceEquals(Under, origin))
            tv = adapter.Delta(name, originWeight)?.to(dtype) ?? zeros(originWeight.shape, dtype);
        else
            tv = Load(name).to(dtype).sub_(originWeight.to(dtype));      // the loaded tensor is ours to change
        return tv.MoveToOuterDisposeScope();
    }

    /// <summary>The config.json that describes this model's architecture, if any.</summary>
    public string? ConfigJson => Folder is not null && File.Exists(Path.Combine(Folder, "config.json"))
        ? Path.Combine(Folder, "config.json") : Under?.ConfigJson;

    public void Dispose()
    {
        weights?.Dispose();
        adapter?.Dispose();
    }
}
