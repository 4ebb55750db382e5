using System.Text.Json.Serialization;

namespace PeftSharp.Tuners.LoKr;

/// <summary>
/// LoKr (Yeh et al., LyCORIS, 2023, https://arxiv.org/abs/2309.14859): the delta is a Kronecker product
/// dW = (alpha/r) W1 ⊗ W2, W1 [a, c] and W2 [b, d] with out = a b and in = c d; either factor may itself be a
/// rank-r product. JSON names are PEFT 0.21's <c>LoKrConfig</c>.
/// </summary>
public sealed record LoKrConfig : LayerTunerConfig
{
    public override string PeftType => "LOKR";
    public int R { get; init; } = 8;
    public double Alpha { get; init; } = 8;
    /// <summary>In training, drop whole rows of the delta with this probability.</summary>
    public double RankDropout { get; init; }
    /// <summary>Whether rank dropout rescales the surviving rows by 1 / (fraction kept).</summary>
    public bool RankDropoutScale { get; init; }
    /// <summary>In training, skip the adapter entirely with this probability.</summary>
    public double ModuleDropout { get; init; }
    /// <summary>A Conv2d option in PEFT; PeftSharp's models have no Conv2d, so it must stay false.</summary>
    public bool UseEffectiveConv2d { get; init; }
    /// <summary>Also write the left factor W1 as a rank-r product when r is small enough.</summary>
    public bool DecomposeBoth { get; init; }
    /// <summary>Preferred size of the left factor's dimensions; -1 picks factors near the square root.</summary>
    public int DecomposeFactor { get; init; } = -1;
    /// <summary>true: W1 starts at zero; "lycoris": W2 starts at zero (as LyCORIS does); false: all random (for tests).</summary>
    [JsonConverter(typeof(BoolOrStringConverter))]
    public string InitWeights { get; init; } = "true";
    public Dictionary<string, double> RankPattern { get; init; } = new();
    public Dictionary<string, double> AlphaPattern { get; init; } = new();

    public int RankFor(string path) => TargetMatcher.PatternKey(RankPattern, path) is { } k ? (int)RankPattern[k] : R;
    public double AlphaFor(string path) => TargetMatcher.PatternKey(AlphaPattern, path) is { } k ? AlphaPattern[k] : Alpha;
}
