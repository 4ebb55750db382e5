using static TorchSharp.torch;

namespace PeftSharp.Tuners.SparseFt.Sara;

/// <summary>
/// SaRA (Hu et al. 2024, "SaRA: High-Efficient Diffusion Model Fine-tuning with Progressive Sparse Low-Rank
/// Adaptation", https://arxiv.org/abs/2409.06633; code: sjtuplayer/SaRA). The trainable entries are the least
/// effective ones, those of smallest magnitude: M = {|W| &lt; θ}, θ set so that |M| = K (the density budget) rather
/// than by an absolute threshold. The update P = scatter(M, φ) is kept low-rank by a nuclear-norm term,
/// L = L_task + λ‖P‖_* (‖P‖_* = Σᵢ σᵢ(P)); as in their code, one target weight is penalised per step (here in turn,
/// theirs draws one at random). Progressive adjustment: after step T_p the mask becomes M ∩ {|W + P| &lt; θ}, i.e. the
/// entries that have grown past θ are "in use" and keep their values, and the rest, still unused, train on.
/// </summary>
internal sealed class SaraMethod : ISparseMethod
{
    public string Name => "sara";

    public Tensor InitialSupport(SparseTarget target, SparseFtConfig config) => SmallestSupport(target.Weight, target.Budget);

    /// <summary>The K entries of smallest |W|, ascending: topK(−|W|).</summary>
    public static Tensor SmallestSupport(Tensor weight, long k)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        return SparseWeightDelta.TopK(weight.detach().to(ScalarType.Float32).abs().neg(), k).MoveToOuterDisposeScope();
    }

    public ISparseSchedule? Schedule(IReadOnlyList<SparseTarget> targets, SparseFtConfig config)
    {
        var s = config.Sara;
        if (!(s.RankPenalty >= 0)) throw new ArgumentException($"SaRA's rank_penalty must be 0 or positive, got {s.RankPenalty}");
        if (s.ProgressiveSteps < -1) throw new ArgumentException($"SaRA's progressive_steps must be -1 (never), 0 (half the run) or a step, got {s.ProgressiveSteps}");
        var progressive = s.ProgressiveSteps == 0 ? config.TotalSteps / 2 : s.ProgressiveSteps;
        return s.RankPenalty == 0 && progressive <= 0 ? null : new SaraSchedule(targets, s.RankPenalty, progressive);
    }
}
