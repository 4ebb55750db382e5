namespace PeftSharp.Tuners.SparseFt;

/// <summary>SaRA's settings; see <see cref="Sara.SaraMethod"/>.</summary>
public sealed record SaraSettings
{
    /// <summary>λ of the nuclear-norm term λ‖P‖_* (their lambda_rank, 5e-4 in their example); 0: none.</summary>
    public double RankPenalty { get; init; } = 5e-4;
    /// <summary>T_p, the step after which entries past the threshold stop training (their progressive_iter); 0: half the run; -1: never.</summary>
    public int ProgressiveSteps { get; init; }
}
