using PeftSharp.Tuners.SparseFt.Masks;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.SparseFt.LtSft;

/// <summary>
/// Lottery-ticket sparse fine-tuning (Ansell et al. 2021, "Composable Sparse Fine-Tuning for Cross-Lingual Transfer",
/// https://arxiv.org/abs/2110.07560). Phase 1 trains the whole target weights, θ₁ = θ₀ + Δ; the mask keeps the K
/// entries that changed most, η = topK(|Δ|). Phase 2 resets to θ₀ and trains only those entries: θ = θ₀ + scatter(η, φ).
/// Outside a training run (no schedule) the adapter is a fixed random mask.
/// </summary>
internal sealed class LtSftMethod : ISparseMethod
{
    public string Name => "lt-sft";

    public Tensor InitialSupport(SparseTarget target, SparseFtConfig config) =>
        RandomMaskMethod.RandomSupport(target.Weight.numel(), target.Budget, config.RandomSeed + target.Ordinal).to(target.Weight.device);

    public ISparseSchedule? Schedule(IReadOnlyList<SparseTarget> targets, SparseFtConfig config)
    {
        var phase1 = config.LtSft.Phase1Steps > 0 ? config.LtSft.Phase1Steps : Math.Max(1, config.TotalSteps / 2);
        if (config.TotalSteps > 0 && phase1 >= config.TotalSteps)
            throw new ArgumentException($"LT-SFT's phase1_steps ({phase1}) must be fewer than the run's {config.TotalSteps} steps, leaving steps for phase 2");
        return new LtSftSchedule(targets, phase1);
    }
}

/// <summary>
/// Phase 1 trains a dense change of each target (and keeps Adam state for it: that phase costs what full fine-tuning
/// costs); after step <c>phase1</c> the top-K of |change| becomes the support, the change is zeroed and frozen (its
/// buffer stays allocated: the trainer's parameter list and checkpoints are fixed), and the values train from zero.
/// </summary>
internal sealed class LtSftSchedule : ISparseSchedule
{
    readonly IReadOnlyList<SparseTarget> targets;

    public LtSftSchedule(IReadOnlyList<SparseTarget> targets, int phase1)
    {
        this.targets = targets;
        Phase1Steps = phase1;
        foreach (var t in targets) t.Layer.StartDense(t.Adapter);
    }

    public int Phase1Steps { get; }
    public bool ChangesParameterSet => true;

    public void AfterOptimizerStep(int step)
    {
        if (step != Phase1Steps) return;
        foreach (var t in targets)
        {
            var d = t.Delta;
            using var scope = NewDisposeScope();
            using var _ = no_grad();
            d.Indices.copy_(SparseWeightDelta.TopK(d.Dense!.detach().abs(), d.K));
            d.Values.zero_();
            d.Dense!.zero_();
            t.Layer.EndDense(t.Adapter);
        }
    }

    public void Resumed(int step)
    {
        if (step < Phase1Steps) return;
        foreach (var t in targets) t.Layer.EndDense(t.Adapter);
    }
}
