namespace PeftSharp.Training;

/// <summary>One optimizer step: the loss averaged over its micro-batches, the learning rate it used, the gradient norm before clipping.</summary>
public sealed record StepRecord(int Step, double Epoch, double Loss, double LearningRate, double GradNorm, double TokensPerSecond);

/// <summary>Held-out loss after <paramref name="Step"/> optimizer steps (0 = before training): token-weighted mean and exp of it.</summary>
public sealed record EvalRecord(int Step, double Loss, double Perplexity, long Tokens);

/// <summary>Why a run ended.</summary>
public enum StopReason
{
    /// <summary>All steps done.</summary>
    Completed,
    /// <summary>Ctrl+C or cancellation: a checkpoint was saved.</summary>
    Interrupted,
    /// <summary>The loss or the gradient norm was NaN or infinite: nothing was saved from that step.</summary>
    NonFinite,
    /// <summary>The gradient norm stayed exactly 0 (nothing learns any more): no final adapter was saved.</summary>
    Collapsed,
}

/// <summary>
/// What a run did. <see cref="Steps"/> are the steps this call took (after a resume, only the new ones);
/// <see cref="LastCheckpoint"/> is the newest complete checkpoint, if any; <see cref="AdapterDir"/> is where
/// the final adapter was written (null unless completed with an output folder).
/// </summary>
public sealed record TrainingResult(StopReason Reason, string Message, IReadOnlyList<StepRecord> Steps, IReadOnlyList<EvalRecord> Evals,
    int GlobalStep, int TotalSteps, string? LastCheckpoint, string? AdapterDir, string? MetricsFile, string? LossCurveFile);

/// <summary>What the progress display needs to know up front.</summary>
public sealed record TrainingPlan(int TotalSteps, int StartStep, int TrainRows, int EvalRows, int EffectiveBatchSize, string? OutputDir);
