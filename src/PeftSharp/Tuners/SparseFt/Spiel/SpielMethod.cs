using PeftSharp.Tuners.SparseFt.Masks;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.SparseFt.Spiel;

/// <summary>
/// SpIEL (Ansell et al. 2024, "Scaling Sparse Fine-Tuning to Large Language Models", https://arxiv.org/abs/2401.16405):
/// a fixed number K of (index, delta) pairs per weight, θ = θ₀ + scatter(η, φ), |η| = K, trained with the authors'
/// per-entry AdamW (<see cref="SftAdamW"/>). SpIEL-AG's drop-and-grow follows their code (<see cref="SpielSchedule"/>):
/// drop the ⌊K·p_t⌋ entries with the smallest |φ|, grow those with the largest accumulated |Σ ∂L/∂θ|, seed their
/// moments from the accumulated gradients. The initial support is random.
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
        // Windows gather steps jk..jk+s and reselect after jk+s; from s = k − 1 on, a window would begin as the last one ends.
        if (s.SelectionAccumulationSteps < 1 || s.SelectionAccumulationSteps > config.ReselectionSteps - 2)
            throw new ArgumentException($"SpIEL's selection_accumulation_steps must be in [1, reselection_steps - 2 = {config.ReselectionSteps - 2}], got {s.SelectionAccumulationSteps}: " +
                "lower it or raise reselection_steps");
        if (!(s.InitialReselectionRate >= 0 && s.InitialReselectionRate <= 1))
            throw new ArgumentException($"SpIEL's initial_reselection_rate must be in [0, 1], got {s.InitialReselectionRate}");
        return new SpielSchedule(targets, config);
    }
}
