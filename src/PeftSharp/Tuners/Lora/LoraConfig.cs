using System.Text.Json.Serialization;

namespace PeftSharp.Tuners.Lora;

/// <summary>
/// LoRA (Hu et al., 2021, https://arxiv.org/abs/2106.09685): W x + (alpha/r) B A x with A [r, in], B [out, r].
/// Variants: rsLoRA scaling alpha/sqrt(r) (Kalajdzievski, 2023), DoRA (Liu et al., 2024), PiSSA, OLoRA and orthogonal
/// inits, and the data-aware EVA, CorDA and LoRA-GA inits (<see cref="Eva"/>, <see cref="Corda"/>, <see cref="LoraGa"/>).
/// JSON names are PEFT 0.21's <c>LoraConfig</c>.
/// </summary>
public sealed record LoraConfig : LayerTunerConfig
{
    public override string PeftType => "LORA";
    public int R { get; init; } = 8;
    public double LoraAlpha { get; init; } = 8;
    public double LoraDropout { get; init; }
    public bool FanInFanOut { get; init; }
    /// <summary>"none", "all" or "lora_only": which biases train and are saved with the adapter.</summary>
    public string Bias { get; init; } = "none";
    public bool UseRslora { get; init; }
    public bool UseDora { get; init; }
    /// <summary>true, false, "gaussian", "pissa", "pissa_niter_N", "olora", "orthogonal", and the data-aware "eva", "corda", "lora_ga".</summary>
    [JsonConverter(typeof(BoolOrStringConverter))]
    public string InitLoraWeights { get; init; } = "true";
    public Dictionary<string, double> RankPattern { get; init; } = new();
    public Dictionary<string, double> AlphaPattern { get; init; } = new();
    public bool LoraBias { get; init; }
    // Written as null when unset, as PEFT writes them.
    /// <summary>EVA's settings (init_lora_weights "eva"); unset: PEFT's defaults.</summary>
    public EvaConfig? EvaConfig { get; init; }
    /// <summary>CorDA's settings (init_lora_weights "corda"); unset: IPM.</summary>
    public CordaConfig? CordaConfig { get; init; }
    /// <summary>LoRA-GA's settings (init_lora_weights "lora_ga"); unset: PEFT's defaults.</summary>
    public LoraGaConfig? LoraGaConfig { get; init; }

    public int RankFor(string path) => TargetMatcher.PatternKey(RankPattern, path) is { } k ? (int)RankPattern[k] : R;
    public double AlphaFor(string path) => TargetMatcher.PatternKey(AlphaPattern, path) is { } k ? AlphaPattern[k] : LoraAlpha;

    public double ScalingFor(string path)
    {
        int r = RankFor(path);
        double alpha = AlphaFor(path);
        return UseRslora ? alpha / Math.Sqrt(r) : alpha / r;
    }
}
