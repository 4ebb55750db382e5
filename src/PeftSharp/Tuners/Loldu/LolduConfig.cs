namespace PeftSharp.Tuners.Loldu;

/// <summary>
/// LoLDU (Shi et al., 2024, https://arxiv.org/abs/2410.13618): W = P L D U (LU with partial pivoting, U scaled to a unit
/// diagonal). The adapter keeps the first r columns of P L and rows of U frozen and trains only the r diagonal values z
/// (initialised to D_r) and a scale s (initialised to alpha / r): dW = P L_r (s diag(z) - s0 D_r) U_r. PEFT lacks the
/// method: our own <c>peft_type</c> "LOLDU", PEFT's layout and naming conventions.
/// </summary>
public sealed record LolduConfig : LayerTunerConfig
{
    public override string PeftType => "LOLDU";
    /// <summary>How many leading LDU components the adapter scales (trainable parameters per layer: r + 1).</summary>
    public int R { get; init; } = 8;
    /// <summary>The scale starts at alpha / r.</summary>
    public double Alpha { get; init; } = 8;
    public double LolduDropout { get; init; }
    /// <summary>true: decompose the base weight; false: zeros (for loading saved tensors over).</summary>
    public bool InitWeights { get; init; } = true;
}
