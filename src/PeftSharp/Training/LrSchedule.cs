namespace PeftSharp.Training;

/// <summary>
/// Learning-rate schedules exactly as transformers' <c>get_*_schedule_with_warmup</c> (a <c>LambdaLR</c>):
/// the rate at optimizer step <c>s</c> (0-based, the step about to be taken) is <c>base_lr * factor(s)</c>,
/// computed in doubles in the same order as the Python, so the values agree to the last bit.
/// </summary>
public sealed record LrSchedule(string Type, double BaseLr, int WarmupSteps, int TotalSteps, double NumCycles = 0.5)
{
    public static readonly string[] Types = ["constant", "constant_with_warmup", "linear", "cosine"];

    /// <summary>
    /// transformers' <c>get_warmup_steps</c>: explicit steps win, else <c>ceil(ratio * total)</c>. Unlike transformers,
    /// an explicit 0 is explicit (null is "not given"), because our warmup ratio does not default to 0.
    /// </summary>
    public static int WarmupFor(int? warmupSteps, double warmupRatio, int totalSteps) =>
        warmupSteps is { } steps ? steps : (int)Math.Ceiling(totalSteps * warmupRatio);

    /// <summary>The learning rate used by optimizer step <paramref name="step"/> (0-based).</summary>
    public double At(int step) => BaseLr * Factor(step);

    public double Factor(int step)
    {
        double s = step, w = WarmupSteps, n = TotalSteps;
        switch (Type)
        {
            case "constant":
                return 1.0;
            case "constant_with_warmup":
                return step < WarmupSteps ? s / Math.Max(1.0, w) : 1.0;
            case "linear":
                if (step < WarmupSteps) return s / Math.Max(1, WarmupSteps);
                return Math.Max(0.0, (n - s) / Math.Max(1, TotalSteps - WarmupSteps));
            case "cosine":
                if (step < WarmupSteps) return s / Math.Max(1, WarmupSteps);
                var progress = (s - w) / Math.Max(1, TotalSteps - WarmupSteps);
                return Math.Max(0.0, 0.5 * (1.0 + Math.Cos(Math.PI * NumCycles * 2.0 * progress)));
            default:
                throw new ArgumentException($"unknown lr_scheduler_type '{Type}'; use one of {string.Join(", ", Types)}");
        }
    }
}
