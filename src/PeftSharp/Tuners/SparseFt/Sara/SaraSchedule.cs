using static TorchSharp.torch;

namespace PeftSharp.Tuners.SparseFt.Sara;

/// <summary>
/// SaRA's nuclear-norm term and progressive adjustment. Entries leaving the mask keep their values (so the delta
/// never leaves its support and stays within the budget); they are held fixed by writing their values back after
/// each optimizer step, since one parameter cannot freeze part of itself. Checkpoints after T_p carry the frozen slots,
/// so a resumed run holds exactly the entries the straight run holds (their values are the restored ones, unchanged
/// since T_p); only a checkpoint written without them has the set recomputed from its values.
/// </summary>
internal sealed class SaraSchedule : ISparseSchedule
{
    readonly IReadOnlyList<SparseTarget> targets;
    readonly double lambda;
    readonly int progressive;
    readonly Tensor[] thresholds;
    (Tensor Slots, Tensor Values)[]? frozen;
    Tensor[]? restoredSlots;
    int taken;

    public SaraSchedule(IReadOnlyList<SparseTarget> targets, double lambda, int progressive)
    {
        this.targets = targets;
        (this.lambda, this.progressive) = (lambda, progressive);
        thresholds = targets.Select(Threshold).ToArray();
    }

    /// <summary>θ: the smallest |W| left out of the mask, so that the mask is {|W| &lt; θ} (ties aside).</summary>
    static Tensor Threshold(SparseTarget t)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var d = t.Delta;
        if (d.K == d.Numel) return tensor(float.PositiveInfinity).DetachFromDisposeScope();
        var outside = ones(d.Numel, dtype: ScalarType.Bool, device: d.Indices.device).index_fill_(0, d.Indices, false);
        return t.Weight.detach().to(ScalarType.Float32).flatten().abs().masked_select(outside).min().DetachFromDisposeScope();
    }

    /// <summary>The target penalised at the coming step.</summary>
    public SparseTarget Penalised => targets[taken % targets.Count];

    public Tensor? ExtraLoss() => lambda == 0 ? null : lambda * NuclearNorm(Penalised.Delta);

    /// <summary>‖P‖_*, P = scatter(idx, φ) as a dense matrix, differentiable in φ.</summary>
    public static Tensor NuclearNorm(SparseWeightDelta d)
    {
        using var scope = NewDisposeScope();
        var p = zeros(d.Numel, dtype: ScalarType.Float32, device: d.Values.device).index_add(0, d.Indices, d.Values, 1).view(d.Shape);
        return linalg.svdvals(p).sum().MoveToOuterDisposeScope();
    }

    /// <summary>Slots of each target that no longer train (after T_p), or null before.</summary>
    public IReadOnlyList<Tensor>? FrozenSlots => frozen?.Select(f => f.Slots).ToList();

    public void AfterOptimizerStep(int step)
    {
        taken = step;
        if (frozen is not null) Hold();
        else if (progressive > 0 && step == progressive) Freeze();
    }

    public void Resumed(int step)
    {
        taken = step;
        if (progressive > 0 && step >= progressive)
        {
            if (restoredSlots is null) Freeze();
            else using (no_grad())
                frozen = targets.Select((t, i) => (restoredSlots[i], t.Delta.Values.detach().index_select(0, restoredSlots[i]).DetachFromDisposeScope())).ToArray();
        }
    }

    const string Key = "sparse_ft.sara.frozen_slots.";

    static string Name(SparseTarget t) => $"{Key}{t.Adapter}.{t.Path}";

    public Dictionary<string, Tensor> CheckpointState() =>
        frozen is null ? new() : targets.Select((t, i) => (Name(t), frozen[i].Slots)).ToDictionary(x => x.Item1, x => x.Slots.clone());

    public void RestoreCheckpointState(IReadOnlyDictionary<string, Tensor> state, string source)
    {
        if (!state.Keys.Any(k => k.StartsWith(Key, StringComparison.Ordinal))) return;
        restoredSlots = targets.Select(t =>
        {
            if (!state.TryGetValue(Name(t), out var slots))
                throw new InvalidDataException($"{source}: no '{Name(t)}' (SaRA's frozen entries of that weight); was it written by another adapter configuration?");
            if (slots.dim() != 1 || slots.dtype != ScalarType.Int64 || (slots.numel() > 0 && slots.max().item<long>() >= t.Delta.K))
                throw new InvalidDataException($"{source}: '{Name(t)}' must be int64 slots below the weight's budget {t.Delta.K}");
            return slots.to(t.Delta.Indices.device).clone().DetachFromDisposeScope();   // the caller owns the state
        }).ToArray();
    }

    // M ∩ {|W + P| < θ}: slots whose entry reached θ leave the trained set with their values (kept for the whole run).
    void Freeze()
    {
        using var _ = no_grad();
        frozen = targets.Select((t, i) =>
        {
            using var scope = NewDisposeScope();
            var d = t.Delta;
            var current = t.Weight.detach().to(ScalarType.Float32).flatten().index_select(0, d.Indices) + d.Values.detach();
            var slots = nonzero(current.abs().ge(thresholds[i])).flatten();
            return (slots.DetachFromDisposeScope(), d.Values.detach().index_select(0, slots).DetachFromDisposeScope());
        }).ToArray();
    }

    void Hold()
    {
        using var _ = no_grad();
        for (int i = 0; i < targets.Count; i++) targets[i].Delta.Values.index_copy_(0, frozen![i].Slots, frozen[i].Values);
    }
}
