using PeftSharp.Tuners.SparseFt.Masks;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.SparseFt.Spiel;

/// <summary>
/// SpIEL (Ansell et al. 2024, "Scaling Sparse Fine-Tuning to Large Language Models", https://arxiv.org/abs/2401.16405):
/// a fixed number K of (index, delta) pairs per weight, θ = θ₀ + scatter(η, φ), |η| = K. Every k steps (SpIEL-AG):
/// drop the n = ⌊K·p_t⌋ active entries whose delta moved least (smallest |φ|), back to the base; grow the n inactive
/// entries with the largest |Σ ∂L/∂θ| over the last few steps; p_t = p₀ (1 − t/T). The initial support is random.
/// </summary>
internal sealed class SpielMethod : ISparseMethod
{
    public string Name => "spiel";

    public Tensor InitialSupport(SparseTarget target, SparseFtConfig config) =>
        RandomMaskMethod.RandomSupport(target.Weight.numel(), target.Budget, config.RandomSeed + target.Ordinal).to(target.Weight.device);

    public ISparseSchedule? Schedule(IReadOnlyList<SparseTarget> targets, SparseFtConfig config)
    {
        if (config.ReselectionSteps == 0) return null;
        var s = config.Spiel;
        if (s.SelectionAccumulationSteps < 1 || s.SelectionAccumulationSteps > config.ReselectionSteps)
            throw new ArgumentException($"SpIEL's selection_accumulation_steps must be in [1, reselection_steps = {config.ReselectionSteps}], got {s.SelectionAccumulationSteps}");
        if (!(s.InitialReselectionRate >= 0 && s.InitialReselectionRate <= 1))
            throw new ArgumentException($"SpIEL's initial_reselection_rate must be in [0, 1], got {s.InitialReselectionRate}");
        return new SpielSchedule(targets, config);
    }
}
