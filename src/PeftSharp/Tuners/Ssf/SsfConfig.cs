namespace PeftSharp.Tuners.Ssf;

/// <summary>
/// SSF, "Scaling &amp; Shifting Your Features" (Lian et al., 2022, https://arxiv.org/abs/2210.08823): after each targeted
/// module, y = gamma * base(x) + beta with per-channel gamma (starts at 1) and beta (starts at 0), so the model starts
/// unchanged. After a linear layer it merges into it: W' = diag(gamma) W, b' = gamma * b + beta.
/// Not a PEFT method: peft_type "SSF" is ours; the file layout is PEFT's (<c>ssf_scale</c>, <c>ssf_shift</c> per module).
/// </summary>
public sealed record SsfConfig : LayerTunerConfig
{
    public override string PeftType => "SSF";
}
