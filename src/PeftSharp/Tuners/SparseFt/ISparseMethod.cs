using static TorchSharp.torch;

namespace PeftSharp.Tuners.SparseFt;

/// <summary>
/// A sparse fine-tuning method: which entries of each target weight may change at first, and, optionally, how the
/// choice changes while training (a schedule: re-selection, phases, an extra loss). Every method produces the same
/// adapter, a <see cref="SparseWeightDelta"/> per target weight. A new method is a folder with one of these and a
/// line in <see cref="SparseMethods"/>.
/// </summary>
public interface ISparseMethod
{
    /// <summary>The <c>--method</c> name and the config's <c>method</c>.</summary>
    string Name { get; }

    /// <summary>The initial support of one target weight: exactly <see cref="SparseTarget.Budget"/> distinct flat indices.</summary>
    Tensor InitialSupport(SparseTarget target, SparseFtConfig config);

    /// <summary>The number of entries of one target that may change: by default ceil(density x numel); a structured method (S²FT) may take fewer.</summary>
    long Budget(SparseTarget target, SparseFtConfig config) => target.Budget;

    /// <summary>What the method does while training, or null for a fixed mask.</summary>
    ISparseSchedule? Schedule(IReadOnlyList<SparseTarget> targets, SparseFtConfig config) => null;
}

/// <summary>One target weight of one adapter: where it is, its layer, and its budget.</summary>
/// <param name="Ordinal">the target's place among the adapter's targets (model order), e.g. to vary a seed per layer.</param>
public sealed record SparseTarget(string Path, SparseFtLayer Layer, string Adapter, int Ordinal, long Budget)
{
    /// <summary>The base weight as stored (Conv1D: [in, out]).</summary>
    public Tensor Weight => Layer.Weight;
    public SparseWeightDelta Delta => Layer.Delta(Adapter);
    /// <summary>The model's config (heads, channels), for methods that select structures.</summary>
    public Models.ModelConfig? Model { get; init; }
}

/// <summary>
/// A delta confined to whole rows or columns, added to the layer's output instead of to its weight so that backward
/// computes the slice's gradient only (S²FT's partial backward).
/// </summary>
public interface ISparseSlice
{
    /// <summary>y + x (scatter(values))ᵀ, for a Linear layer's input x and output y.</summary>
    Tensor AddTo(Tensor y, Tensor x, Tensor values);
}

/// <summary>A method's work during training, called by the trainer through the tuner's hooks.</summary>
public interface ISparseSchedule
{
    /// <param name="step">the optimizer step just taken, from 1 (gradients are still there).</param>
    void AfterOptimizerStep(int step);

    /// <summary>After a checkpoint is restored (values, optimizer state and supports): take up the state of <paramref name="step"/>.</summary>
    void Resumed(int step) { }

    /// <summary>What a resumed run cannot recompute from the checkpoint's values (new tensors, owned by the caller).</summary>
    Dictionary<string, Tensor> CheckpointState() => new();

    /// <summary>Takes up <see cref="CheckpointState"/> (before <see cref="Resumed"/>); <paramref name="source"/> names the file.</summary>
    void RestoreCheckpointState(IReadOnlyDictionary<string, Tensor> state, string source) { }

    /// <summary>A term added to the training loss, or null.</summary>
    Tensor? ExtraLoss() => null;

    /// <summary>True when the schedule freezes parameters as it goes (the fused optimizer needs a fixed set).</summary>
    bool ChangesParameterSet => false;

    /// <summary>After each micro-batch's backward.</summary>
    void AfterBackward() { }

    /// <summary>The method's own optimizer for the run, or null for the trainer's (see <see cref="ITrainingHooks.Optimizer"/>).</summary>
    Training.IOptimizer? Optimizer(Training.TrainingOptions options, IReadOnlyList<(string Name, TorchSharp.Modules.Parameter P)> parameters) => null;
}
