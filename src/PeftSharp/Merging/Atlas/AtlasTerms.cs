using PeftSharp.Models;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Merging;

/// <summary>One block of aTLAS: its name in the coefficients, the model's parameter, and which task vectors change it.</summary>
internal sealed record AtlasBlock(string Name, Parameter Parameter, bool[] Changed);

/// <summary>
/// Where aTLAS reads each block's base weight and task vectors. Tensors it returns belong to the terms or to the
/// caller's dispose scope, never to the caller alone: read them inside a <c>NewDisposeScope</c> and do not dispose them.
/// </summary>
internal interface IAtlasTerms : IDisposable
{
    IReadOnlyList<AtlasBlock> Blocks { get; }
    int Tasks { get; }

    /// <summary><c>base_b</c> in the parameter's dtype.</summary>
    Tensor Base(AtlasBlock b);

    /// <summary><c>tau_{t,b}</c> in the parameter's dtype, for a t that changes b; <paramref name="baseWeight"/> is <see cref="Base"/>'s.</summary>
    Tensor Tau(AtlasBlock b, int t, Tensor baseWeight);
}

/// <summary>Task vectors given as tensors, and a copy of each block's base weight taken from the model.</summary>
internal sealed class HeldTerms : IAtlasTerms
{
    readonly IReadOnlyList<IReadOnlyDictionary<string, Tensor>> taskVectors;
    readonly Dictionary<string, Tensor> baseWeights = new();

    public IReadOnlyList<AtlasBlock> Blocks { get; }
    public int Tasks => taskVectors.Count;

    public HeldTerms(PretrainedModel model, IReadOnlyList<IReadOnlyDictionary<string, Tensor>> taskVectors)
    {
        this.taskVectors = taskVectors;
        var blocks = new List<AtlasBlock>();
        foreach (var (name, p) in model.named_parameters())
        {
            var taus = taskVectors.Select(tv => tv.TryGetValue(name, out var t) ? t : null).ToArray();
            if (taus.All(t => t is null)) { p.requires_grad_(false); continue; }
            foreach (var t in taus)
                if (t is not null && !t.shape.SequenceEqual(p.shape))
                    throw new ArgumentException($"task vector of '{name}' has shape [{string.Join(",", t.shape)}] but the model's is [{string.Join(",", p.shape)}]");
            blocks.Add(new AtlasBlock(name, p, taus.Select(t => t is not null).ToArray()));
            baseWeights[name] = p.detach().clone();
        }
        Blocks = blocks;
    }

    public Tensor Base(AtlasBlock b) => baseWeights[b.Name];

    public Tensor Tau(AtlasBlock b, int t, Tensor baseWeight) => taskVectors[t][b.Name];

    public void Dispose()
    {
        foreach (var w in baseWeights.Values) w.Dispose();
    }
}

/// <summary>
/// Base weights and task vectors read from the merge's inputs one tensor at a time (memory-mapped checkpoints, LoRA
/// adapters as <c>B A</c>), so that memory holds the model and its gradients but no copy of any input. A block is a
/// parameter of the model stored under its name in the base checkpoint (or without its first prefix, as base-model
/// checkpoints store heads' bodies); a task model changes it when it has that tensor (an adapter: when it targets it).
/// </summary>
internal sealed class StreamedTerms : IAtlasTerms
{
    readonly ModelSource baseModel;
    readonly IReadOnlyList<MergeInput> tasks;

    public IReadOnlyList<AtlasBlock> Blocks { get; }
    public int Tasks => tasks.Count;

    public StreamedTerms(PretrainedModel model, ModelSource baseModel, IReadOnlyList<MergeInput> tasks)
    {
        this.baseModel = baseModel;
        this.tasks = tasks;
        var blocks = new List<AtlasBlock>();
        foreach (var (name, p) in model.named_parameters())
        {
            var storedName = StoredName(name);
            var changed = storedName is null || !p.is_floating_point() ? null : tasks.Select(m => Changes(m.Source, storedName)).ToArray();
            if (changed is null || !changed.Any(c => c)) { p.requires_grad_(false); continue; }
            blocks.Add(new AtlasBlock(storedName!, p, changed));
        }
        Blocks = blocks;
    }

    string? StoredName(string name)
    {
        if (baseModel.Contains(name)) return name;
        int dot = name.IndexOf('.');
        return dot > 0 && baseModel.Contains(name[(dot + 1)..]) ? name[(dot + 1)..] : null;
    }

    bool Changes(ModelSource task, string name) =>
        task.Adapter is { } adapter && ReferenceEquals(task.Under, baseModel) ? adapter.Changes(name) : task.Contains(name);

    public Tensor Base(AtlasBlock b) => baseModel.Load(b.Name).to(b.Parameter.dtype);

    public Tensor Tau(AtlasBlock b, int t, Tensor baseWeight) => tasks[t].Source.TaskVector(b.Name, baseModel, baseWeight, b.Parameter.dtype);

    public void Dispose() { }   // the sources belong to the caller's MergeInputs
}
