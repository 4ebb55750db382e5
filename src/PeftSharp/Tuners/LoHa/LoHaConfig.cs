namespace PeftSharp.Tuners.LoHa;

/// <summary>
/// LoHa (Hyeon-Woo et al., FedPara, 2022, https://arxiv.org/abs/2108.06098; as in LyCORIS): the delta is the
/// Hadamard product of two rank-r products, dW = (alpha/r) (W1a W1b) ⊙ (W2a W2b), of rank up to r².
/// JSON names are PEFT 0.21's <c>LoHaConfig</c>.
/// </summary>
public sealed record LoHaConfig : LayerTunerConfig
{
    public override string PeftType => "LOHA";
    public int R { get; init; } = 8;
    public double Alpha { get; init; } = 8;
    /// <summary>In training, drop whole rows of the delta with this probability (survivors rescaled).</summary>
    public double RankDropout { get; init; }
    /// <summary>In training, skip the adapter entirely with this probability.</summary>
    public double ModuleDropout { get; init; }
    /// <summary>A Conv2d option in PEFT; PeftSharp's models have no Conv2d, so it must stay false.</summary>
    public bool UseEffectiveConv2d { get; init; }
    /// <summary>true: W2b starts at zero (the model is unchanged); false: every factor random (for tests).</summary>
    public bool InitWeights { get; init; } = true;
    public Dictionary<string, double> RankPattern { get; init; } = new();
    public Dictionary<string, double> AlphaPattern { get; init; } = new();

    public int RankFor(string path) => TargetMatcher.PatternKey(RankPattern, path) is { } k ? (int)RankPattern[k] : R;
    public double AlphaFor(string path) => TargetMatcher.PatternKey(AlphaPattern, path) is { } k ? AlphaPattern[k] : Alpha;
}
