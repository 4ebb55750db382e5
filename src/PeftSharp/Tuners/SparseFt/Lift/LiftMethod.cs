using static TorchSharp.torch;

namespace PeftSharp.Tuners.SparseFt.Lift;

/// <summary>
/// LIFT (Liu et al. 2025, "LIFT the Veil for the Truth: Principal Weights Emerge after Rank Reduction",
/// https://arxiv.org/abs/2506.00772): the trainable entries are the principal weights, the K largest-magnitude
/// entries of the weight's best rank-r approximation, η = topK(|U_r Σ_r V_rᵀ|) with W = U Σ Vᵀ; the mask is recomputed
/// from the current weight θ₀ + δ every k steps. Here an entry that leaves the mask goes back to the base (LIFT keeps
/// its trained value), so that the delta never exceeds its budget of K entries.
/// </summary>
internal sealed class LiftMethod : ISparseMethod
{
    public string Name => "lift";

    public Tensor InitialSupport(SparseTarget target, SparseFtConfig config)
    {
        if (config.Lift.Rank < 1) throw new ArgumentException($"LIFT's rank must be at least 1, got {config.Lift.Rank}");
        return PrincipalSupport(target.Weight, config.Lift.Rank, target.Budget);
    }

    /// <summary>topK(|W_r|), W_r the rank-r truncated SVD of <paramref name="weight"/> (as stored: the transpose has the same entries).</summary>
    public static Tensor PrincipalSupport(Tensor weight, int rank, long k)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var (u, s, vh) = linalg.svd(weight.detach().to(ScalarType.Float32), fullMatrices: false);
        long r = Math.Min(rank, s.shape[0]);
        var approx = (u.narrow(1, 0, r) * s.narrow(0, 0, r)).matmul(vh.narrow(0, 0, r));
        return SparseWeightDelta.TopK(approx.abs(), k).MoveToOuterDisposeScope();
    }

    public ISparseSchedule? Schedule(IReadOnlyList<SparseTarget> targets, SparseFtConfig config) =>
        config.ReselectionSteps > 0 ? new LiftSchedule(targets, config) : null;

    sealed class LiftSchedule(IReadOnlyList<SparseTarget> targets, SparseFtConfig c) : ISparseSchedule
    {
        public void AfterOptimizerStep(int step)
        {
            if (step % c.ReselectionSteps != 0 || (c.TotalSteps > 0 && step >= c.TotalSteps)) return;
            foreach (var t in targets)
            {
                using var scope = NewDisposeScope();
                using var _ = no_grad();
                var current = t.Weight.detach().to(ScalarType.Float32) + t.Delta.ToDense();
                t.Delta.ReplaceSupport(PrincipalSupport(current, c.Lift.Rank, t.Delta.K));
            }
        }
    }
}
