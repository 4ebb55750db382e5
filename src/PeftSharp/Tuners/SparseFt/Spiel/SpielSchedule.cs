using static TorchSharp.torch;

namespace PeftSharp.Tuners.SparseFt.Spiel;

/// <summary>
/// SpIEL-AG's regrowth. Gradients of inactive entries come from a probe: during the last
/// <c>selection_accumulation_steps</c> steps before each regrowth, a zero tensor the weight's size is added in the
/// forward and its gradient sums dL/dW over those steps (the paper's accumulated gradients); the rest of the time no
/// dense gradient exists. Entries that move to new indices get value 0 and zeroed optimizer state (the paper seeds the
/// moments from the accumulated gradient instead). A resume inside an accumulation window loses the sums gathered
/// before the checkpoint, so that one regrowth sees fewer steps.
/// </summary>
internal sealed class SpielSchedule : ISparseSchedule
{
    readonly IReadOnlyList<SparseTarget> targets;
    readonly int every, window, total;
    readonly double rate;

    public SpielSchedule(IReadOnlyList<SparseTarget> targets, SparseFtConfig c)
    {
        this.targets = targets;
        (every, window, total, rate) = (c.ReselectionSteps, c.Spiel.SelectionAccumulationSteps, c.TotalSteps, c.Spiel.InitialReselectionRate);
        SetProbes(nextStep: 1);
    }

    /// <summary>Regrowth happens after steps k, 2k, ...; gradients are summed over the <c>window</c> steps before each.</summary>
    bool Probing(int step) => (step - 1) % every >= every - window;

    /// <summary>Share of the support replaced at step t: p₀ (1 − t/T) (p₀ when the run length is unknown).</summary>
    public double RateAt(int step) => total > 0 ? rate * Math.Max(0, 1 - (double)step / total) : rate;

    public void AfterOptimizerStep(int step)
    {
        if (step % every == 0 && (total <= 0 || step < total)) Regrow(step);
        SetProbes(step + 1);
    }

    public void Resumed(int step) => SetProbes(step + 1);

    void Regrow(int step)
    {
        var p = RateAt(step);
        foreach (var t in targets)
        {
            var d = t.Delta;
            using var scope = NewDisposeScope();
            using var _ = no_grad();
            if (d.Probe?.grad is not { } grad) continue;
            var n = (long)Math.Floor(d.K * p);
            if (n == 0) continue;
            var dropped = d.Values.detach().abs().topk((int)n, largest: false, sorted: false).indexes;   // slots that moved least
            var remaining = zeros(d.Numel, dtype: ScalarType.Bool, device: d.Indices.device).index_fill_(0, d.Indices, true)
                .index_fill_(0, d.Indices.index_select(0, dropped), false);
            var score = grad.flatten().abs().masked_fill(remaining, double.NegativeInfinity);
            var incoming = score.topk((int)n, largest: true, sorted: false).indexes;                       // largest accumulated gradients
            var support = d.Indices.clone().index_put_(incoming, dropped);
            d.ReplaceSupport(support);
        }
    }

    // A probe lives for the whole window (its gradient sums over the window's steps) and is dropped after the regrowth.
    void SetProbes(int nextStep)
    {
        bool on = Probing(nextStep);
        foreach (var t in targets)
        {
            var d = t.Delta;
            if (on && d.Probe is null)
                d.Probe = zeros(d.Shape, device: d.Indices.device).requires_grad_(true).DetachFromDisposeScope();
            else if (!on && d.Probe is { } probe)
            {
                probe.Dispose();
                d.Probe = null;
            }
        }
    }
}
