using PeftSharp.Training;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.SparseFt.Spiel;

/// <summary>
/// SpIEL-AG's drop-and-grow, step for step as the authors' <c>SftSelector</c> (AlanAnsell/peft, <c>tuners/sft/trainer.py</c>)
/// does it, with k = reselection_steps and s = selection_accumulation_steps:
/// <list type="bullet">
/// <item>gradients of the whole weight are gathered during steps 1..s and then k..k+s, 2k..2k+s, ... (a probe, a zero
/// tensor added in the forward, yields dL/dW); the first gradient of a window picks the K candidates
/// (<see cref="GrowthCandidates"/>);</item>
/// <item>after steps s, k+s, 2k+s, ... (t ≤ T): n = ⌊K·p_t⌋ with p = 1 at the first reselection (the whole random support
/// is re-chosen) and p₀(1 − t/T) after; the n slots with the smallest |φ| drop; the candidates that are not among the
/// remaining active entries grow, the largest |Σg| first; an entry both dropped and grown keeps its slot, value and
/// moments; a grown entry starts at 0;</item>
/// <item>a grown entry's moments are seeded with SftAdamW: m = mean(g)·(1 − β1^a), v = mean(g²)·(1 − β2^a), age a = the
/// window's gradients (so bias correction makes them the unbiased means); the sums are then dropped.</item>
/// </list>
/// Like their gradient hook, the probe is read after every micro-batch's backward: with gradient accumulation G the
/// samples are micro-batches and the seeded age is samples / G.
/// </summary>
internal sealed class SpielSchedule : ISparseSchedule
{
    readonly IReadOnlyList<SparseTarget> targets;
    readonly int every, window, total;
    readonly double rate;
    readonly GrowthCandidates?[] candidates;
    SftAdamW? optimizer;
    int accumulation = 1;

    public SpielSchedule(IReadOnlyList<SparseTarget> targets, SparseFtConfig c)
    {
        this.targets = targets;
        (every, window, total, rate) = (c.ReselectionSteps, c.Spiel.SelectionAccumulationSteps, c.TotalSteps, c.Spiel.InitialReselectionRate);
        candidates = new GrowthCandidates?[targets.Count];
        SetProbes(nextStep: 1);
    }

    /// <summary>Whether step <paramref name="step"/>'s gradient is gathered: 1..s, then k..k+s, 2k..2k+s, ...</summary>
    public bool Probing(int step) => step % every <= window;

    /// <summary>Whether the support is re-chosen after step <paramref name="step"/>: s, k+s, 2k+s, ... up to T.</summary>
    public bool Reselects(int step) => step % every == window && (total <= 0 || step <= total);

    /// <summary>Share of the support re-chosen after step t: all of it at the first reselection, then p₀ (1 − t/T) (p₀ when T is unknown).</summary>
    public double RateAt(int step) => step == window ? 1 : total > 0 ? rate * Math.Max(0, 1 - (double)step / total) : rate;

    public IOptimizer? Optimizer(TrainingOptions o, IReadOnlyList<(string Name, Parameter P)> parameters)
    {
        if (o.Optim != "auto") return null;   // an explicit optimizer: moved slots get zeroed moments instead of seeds
        if (o.Amsgrad) throw new ArgumentException("option amsgrad: SpIEL's optimizer (the authors' SftAdamW) has none; use --optim adamw_torch for amsgrad with zeroed moments at regrowth");
        accumulation = o.GradientAccumulationSteps;
        return optimizer = new SftAdamW(parameters, o.AdamBeta1, o.AdamBeta2, o.AdamEpsilon, o.WeightDecay);
    }

    /// <summary>Uses <paramref name="o"/> for the seeds (a caller that steps the optimizer itself, as tests do).</summary>
    internal void UseOptimizer(SftAdamW o) => optimizer = o;

    public void AfterBackward() => Gather();

    public void AfterOptimizerStep(int step)
    {
        Gather();   // a caller that does not report each backward: the step's gradient is one sample
        if (Reselects(step))
        {
            Reselect(RateAt(step));
            ClearCandidates();
        }
        SetProbes(step + 1);
    }

    public void Resumed(int step) => SetProbes(step + 1);

    void Gather()
    {
        for (int i = 0; i < targets.Count; i++)
        {
            var d = targets[i].Delta;
            if (d.Probe is not { } probe) continue;
            using var grad = probe.grad;
            if (grad is null) continue;
            if (candidates[i] is { } c) c.Add(grad);
            else candidates[i] = GrowthCandidates.First(grad, d.K);
            probe.grad = null;   // the next backward starts a new sample
        }
    }

    void Reselect(double p)
    {
        for (int i = 0; i < targets.Count; i++)
            if (candidates[i] is { } c) Reselect(targets[i].Delta, c, (long)Math.Floor(targets[i].Delta.K * p));
    }

    void Reselect(SparseWeightDelta d, GrowthCandidates c, long n)
    {
        if (n == 0) return;
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var changing = d.Values.detach().abs().topk((int)n, largest: false, sorted: true).indexes;   // slots, least moved first
        var outgoing = d.Indices.index_select(0, changing);
        var isOutgoing = Mask(d, outgoing);
        var isRemaining = Mask(d, d.Indices).logical_and_(isOutgoing.logical_not());
        var valid = isRemaining.index_select(0, c.Indices).logical_not();
        var (cIdx, cSum, cSq) = (c.Indices.masked_select(valid), c.GradSum.masked_select(valid), c.GradSqSum.masked_select(valid));
        var best = cSum.abs().topk((int)Math.Min(n, cIdx.shape[0]), largest: true, sorted: true).indexes;
        var (incoming, inSum, inSq) = (cIdx.index_select(0, best), cSum.index_select(0, best), cSq.index_select(0, best));
        // An entry both dropped and grown stays where it is; with fewer candidates than n, the least moved slots change.
        var stays = Mask(d, incoming).index_select(0, outgoing);
        changing = changing.masked_select(stays.logical_not());
        var fresh = isOutgoing.index_select(0, incoming).logical_not();
        (incoming, inSum, inSq) = (incoming.masked_select(fresh), inSum.masked_select(fresh), inSq.masked_select(fresh));
        changing = changing.narrow(0, 0, incoming.shape[0]);
        if (incoming.shape[0] == 0) return;
        d.ReplaceSlots(changing, incoming);
        if (optimizer is { } o)
        {
            // Unbiased means of g and g² over the window, biased back by the age so that Adam's correction undoes it.
            var age = full_like(inSum, (double)c.Samples) / accumulation;
            o.Seed(d.Values, changing, inSum / c.Samples * SftAdamW.Correction(o.Beta1, age), inSq / c.Samples * SftAdamW.Correction(o.Beta2, age), age);
        }
        else d.ChangedSlots.Add(changing.DetachFromDisposeScope());
    }

    static Tensor Mask(SparseWeightDelta d, Tensor indices) =>
        zeros(d.Numel, dtype: ScalarType.Bool, device: d.Indices.device).index_fill_(0, indices, true);

    void ClearCandidates()
    {
        for (int i = 0; i < candidates.Length; i++)
        {
            candidates[i]?.Dispose();
            candidates[i] = null;
        }
    }

    string Prefix(int i) => $"spiel.{targets[i].Adapter}.{targets[i].Path}.";

    /// <summary>The candidates of a window the checkpoint falls in, so that a resumed run regrows as the straight one.</summary>
    public Dictionary<string, Tensor> CheckpointState()
    {
        var state = new Dictionary<string, Tensor>();
        for (int i = 0; i < targets.Count; i++)
            if (candidates[i] is { } c)
                foreach (var (k, t) in c.Save(Prefix(i))) state[k] = t;
        return state;
    }

    public void RestoreCheckpointState(IReadOnlyDictionary<string, Tensor> state, string source)
    {
        ClearCandidates();
        for (int i = 0; i < targets.Count; i++)
            candidates[i] = GrowthCandidates.Load(state, Prefix(i), targets[i].Delta.K, targets[i].Delta.Indices.device, source);
    }

    // A probe lives for one step: its gradient is read after the step, and a new one is made for the next step in a window.
    void SetProbes(int nextStep)
    {
        bool on = Probing(nextStep);
        foreach (var t in targets)
        {
            var d = t.Delta;
            d.Probe?.Dispose();
            d.Probe = on ? zeros(d.Shape, device: d.Indices.device).requires_grad_(true).DetachFromDisposeScope() : null;
        }
    }
}
