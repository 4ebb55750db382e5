namespace PeftSharp.Merging;

/// <summary>How a method combines the inputs of one tensor.</summary>
public enum MergeKind
{
    /// <summary>Sparsify task vectors (model - base), optionally elect signs, sum: mergekit's generalized task arithmetic.</summary>
    TaskVectors,
    /// <summary>Weighted average of the weights themselves (model soups).</summary>
    Linear,
    /// <summary>Spherical interpolation between the base and one other model.</summary>
    Slerp,
    /// <summary>Model Stock: towards the average of the models, by an amount set by their angle around the base.</summary>
    ModelStock,
}

/// <summary>How task vectors are sparsified before they are combined.</summary>
public enum Sparsification { None, Magnitude, Random, Breadcrumbs }

/// <summary>One merge method: what it does to a tensor and the defaults of its options.</summary>
public sealed record MergeMethod(string Name, MergeKind Kind, Sparsification Sparsify = Sparsification.None,
    bool Consensus = false, bool DefaultNormalize = false, bool DefaultRescale = false)
{
    public bool NeedsBase => Kind != MergeKind.Linear;
}

/// <summary>The registry: one line per method, with mergekit's defaults (registry.py).</summary>
public static class MergeMethods
{
    static readonly MergeMethod[] All =
    [
        new("linear", MergeKind.Linear, DefaultNormalize: true),
        new("task_arithmetic", MergeKind.TaskVectors),
        new("magnitude_prune", MergeKind.TaskVectors, Sparsification.Magnitude), // PEFT's; not in mergekit
        new("ties", MergeKind.TaskVectors, Sparsification.Magnitude, Consensus: true, DefaultNormalize: true),
        new("dare_linear", MergeKind.TaskVectors, Sparsification.Random, DefaultRescale: true),
        new("dare_ties", MergeKind.TaskVectors, Sparsification.Random, Consensus: true, DefaultRescale: true),
        new("breadcrumbs", MergeKind.TaskVectors, Sparsification.Breadcrumbs),
        new("breadcrumbs_ties", MergeKind.TaskVectors, Sparsification.Breadcrumbs, Consensus: true),
        new("slerp", MergeKind.Slerp),
        new("model_stock", MergeKind.ModelStock),
    ];

    public static IEnumerable<string> Names => All.Select(m => m.Name);

    public static MergeMethod Get(string name) =>
        All.FirstOrDefault(m => m.Name == name)
        ?? throw new MergeException($"unknown merge_method '{name}' (known: {string.Join(", ", Names)})");
}
