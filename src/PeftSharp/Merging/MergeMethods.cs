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
    /// <summary>SCE: select high-variance entries, weight task vectors by their energy, erase minority signs.</summary>
    Sce,
    /// <summary>NearSwap: take the other model's value where it is close to the base's, keep the base's elsewhere.</summary>
    NearSwap,
    /// <summary>NuSLERP: slerp between two models (or their task vectors), by weight, per row or over the whole tensor.</summary>
    NuSlerp,
    /// <summary>Multi-SLERP: barycentric interpolation of any number of models on the hypersphere.</summary>
    MultiSlerp,
    /// <summary>Karcher mean: the Riemannian mean of the models' directions, scaled by their mean norm.</summary>
    Karcher,
    /// <summary>PCB-Merging: task vectors weighted by balanced intra- and inter-model competition scores.</summary>
    Pcb,
    /// <summary>One model's tensors as they are (optionally scaled): with <c>slices:</c>, layer stacking.</summary>
    Passthrough,
    /// <summary>aTLAS: one coefficient per tensor per task vector, learned on data by <c>Atlas.Run</c> before the tensors are written.</summary>
    Atlas,
}

/// <summary>How task vectors are sparsified before they are combined.</summary>
public enum Sparsification { None, Magnitude, Random, Breadcrumbs, Della }

/// <summary>
/// A parameter a method reads (mergekit's <c>ConfigParameterDef</c>): its name, and its default when it is not set
/// (null with <paramref name="Required"/> false: no default, the method handles its absence).
/// </summary>
public sealed record ParameterDef(string Name, object? Default = null, bool Required = false);

/// <summary>
/// One merge method: what it does to a tensor, and the parameters it reads. <see cref="Parameters"/> are global (the
/// top-level <c>parameters:</c>); <see cref="ModelParameters"/> are per model (a model's <c>parameters:</c>, with the
/// top-level value as the default), as mergekit's <c>parameters()</c> and <c>tensor_parameters()</c>.
/// </summary>
public sealed record MergeMethod(string Name, MergeKind Kind, IReadOnlyList<ParameterDef> Parameters,
    IReadOnlyList<ParameterDef> ModelParameters, Sparsification Sparsify = Sparsification.None, bool Consensus = false,
    bool NeedsBase = true)
{
    /// <summary>The declaration of <paramref name="name"/>, global or per model, or null when this method does not read it.</summary>
    public ParameterDef? Find(string name) =>
        Parameters.FirstOrDefault(p => p.Name == name) ?? ModelParameters.FirstOrDefault(p => p.Name == name);

    /// <summary>What it reads, for messages: <c>normalize, t; per model: weight</c>.</summary>
    public string Describe()
    {
        static string List(IReadOnlyList<ParameterDef> ps) => ps.Count == 0 ? "none" : string.Join(", ", ps.Select(p => p.Name));
        return $"global: {List(Parameters)}; per model: {List(ModelParameters)}";
    }
}

/// <summary>The registry: one line per method, with mergekit's parameters and defaults (merge_methods/registry.py).</summary>
public static class MergeMethods
{
    static readonly ParameterDef Weight = new("weight", Required: true);

    static readonly MergeMethod[] All =
    [
        new("linear", MergeKind.Linear, [new("normalize", true)], [Weight], NeedsBase: false),
        TaskVectors("task_arithmetic"),
        TaskVectors("magnitude_prune", Sparsification.Magnitude), // PEFT's; not in mergekit
        TaskVectors("ties", Sparsification.Magnitude, consensus: true, normalize: true),
        TaskVectors("dare_linear", Sparsification.Random, rescale: true),
        TaskVectors("dare_ties", Sparsification.Random, consensus: true, rescale: true),
        TaskVectors("breadcrumbs", Sparsification.Breadcrumbs),
        TaskVectors("breadcrumbs_ties", Sparsification.Breadcrumbs, consensus: true),
        TaskVectors("della", Sparsification.Della, consensus: true, normalize: true, rescale: true),
        TaskVectors("della_linear", Sparsification.Della, rescale: true),
        new("slerp", MergeKind.Slerp, [new("t", Required: true)], []),
        new("model_stock", MergeKind.ModelStock, [new("filter_wise", false)], []),
        new("sce", MergeKind.Sce, [new("int8_mask", false), new("select_topk", 1.0)], []),
        new("nearswap", MergeKind.NearSwap, [new("t", Required: true)], []),
        new("nuslerp", MergeKind.NuSlerp, [new("nuslerp_row_wise", false), new("nuslerp_flatten", true)], [Weight], NeedsBase: false),
        new("multislerp", MergeKind.MultiSlerp, [new("normalize_weights", true), new("eps", 1e-8)], [Weight], NeedsBase: false),
        new("karcher", MergeKind.Karcher, [new("max_iter", 10.0), new("tol", 1e-5)], [], NeedsBase: false),
        new("pcb", MergeKind.Pcb, [new("pcb_ratio", 0.1)], [Weight]),   // not in mergekit: the authors' PCB_merge
        new("passthrough", MergeKind.Passthrough, [], [new("scale")], NeedsBase: false),
        // not in mergekit: learned from --train-file; unset values take AtlasOptions' defaults
        new("atlas", MergeKind.Atlas, [new("steps"), new("learning_rate"), new("batch_size"), new("init_lambda"), new("seed")], []),
    ];

    /// <summary>
    /// mergekit's generalized task arithmetic: int8_mask, normalize, rescale and lambda globally; weight and density per
    /// model, plus gamma (breadcrumbs) or epsilon (della). Consensus methods also read PeftSharp's majority_sign_method
    /// and convention.
    /// </summary>
    static MergeMethod TaskVectors(string name, Sparsification sparsify = Sparsification.None, bool consensus = false,
        bool normalize = false, bool rescale = false)
    {
        List<ParameterDef> global = [new("int8_mask", false), new("normalize", normalize), new("rescale", rescale), new("lambda", 1.0)];
        if (consensus) global.AddRange([new("majority_sign_method", "total"), new("convention", "mergekit")]);
        List<ParameterDef> perModel = [Weight, new("density", 1.0)];
        if (sparsify == Sparsification.Breadcrumbs) perModel.Add(new("gamma", 0.01));
        if (sparsify == Sparsification.Della) perModel.Add(new("epsilon", 0.15));
        return new MergeMethod(name, MergeKind.TaskVectors, global, perModel, sparsify, consensus);
    }

    public static IEnumerable<string> Names => All.Select(m => m.Name);

    public static MergeMethod Get(string name) =>
        All.FirstOrDefault(m => m.Name == name)
        ?? throw new MergeException($"unknown merge_method '{name}' (known: {string.Join(", ", Names)})");
}
