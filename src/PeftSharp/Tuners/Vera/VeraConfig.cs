namespace PeftSharp.Tuners.Vera;

/// <summary>
/// VeRA (Kopiczko et al., 2024, https://arxiv.org/abs/2310.11454): one pair of frozen random matrices A [r, in],
/// B [out, r] shared by every adapted layer, and per layer two trained vectors: h = W x + Λb B Λd A x.
/// JSON names are PEFT 0.21's <c>VeraConfig</c>.
/// </summary>
public sealed record VeraConfig : LayerTunerConfig
{
    public override string PeftType => "VERA";
    public int R { get; init; } = 256;
    /// <summary>Seed of torch's CPU generator that draws A and B (kaiming-uniform), so they can be regenerated.</summary>
    public long ProjectionPrngKey { get; init; }
    /// <summary>Whether A and B are written with the adapter (<c>base_model.vera_A</c>/<c>vera_B</c>) or regenerated from the seed.</summary>
    public bool SaveProjection { get; init; } = true;
    public double VeraDropout { get; init; }
    /// <summary>The initial value of every entry of Λd (Λb starts at zero).</summary>
    public double DInitial { get; init; } = 0.1;
    public bool FanInFanOut { get; init; }
    /// <summary>Only "none" is supported: PEFT's "all"/"vera_only" train the base biases too.</summary>
    public string Bias { get; init; } = "none";
    /// <summary>true: Λb = 0 (the model is unchanged), Λd = d_initial; false: Λb = 1, Λd random (for tests).</summary>
    public bool InitWeights { get; init; } = true;
}
