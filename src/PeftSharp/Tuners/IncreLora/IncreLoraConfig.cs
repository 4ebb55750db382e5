using System.Text.Json.Serialization;

namespace PeftSharp.Tuners.IncreLora;

/// <summary>
/// IncreLoRA (Zhang et al., 2023, https://arxiv.org/abs/2308.12043; the authors' code: FeiyuZhang98/IncreLoRA): AdaLoRA's
/// SVD form dW = (alpha / r) P (Λ ⊙ Q) started small (<see cref="InitR"/> per module) and grown during training: every
/// <see cref="DeltaT"/> steps after <see cref="Tinit"/>, the <see cref="TopH"/> modules with the highest smoothed
/// sensitivity each gain <see cref="IncreRankNum"/> rank-1 components, until the total rank reaches
/// <see cref="TargetR"/> per module (or <see cref="TargetTotalRank"/>). PEFT has no IncreLoRA: <c>peft_type</c>
/// "INCRELORA" is ours, the other names follow AdaLoRA's and the authors' arguments. A trained adapter is saved as a
/// plain PEFT LoRA with a <c>rank_pattern</c>.
/// </summary>
public sealed record IncreLoraConfig : LayerTunerConfig
{
    public override string PeftType => "INCRELORA";
    /// <summary>Rank every module starts with (the authors use 1).</summary>
    public int InitR { get; init; } = 1;
    /// <summary>Average rank per module once the budget is spent.</summary>
    public int TargetR { get; init; } = 8;
    /// <summary>The total rank to reach instead of target_r × modules.</summary>
    public int? TargetTotalRank { get; init; }
    /// <summary>Steps before the first increase.</summary>
    public int Tinit { get; init; }
    /// <summary>Steps between increases; null spreads the increases evenly up to half of <see cref="TotalStep"/>.</summary>
    [JsonPropertyName("deltaT")]
    public int? DeltaT { get; init; }
    /// <summary>Modules that grow at each increase; null: a quarter of the modules (at least one).</summary>
    public int? TopH { get; init; }
    /// <summary>Components a chosen module gains at each increase; null: target_r / 2 (the authors' table), at least 1.</summary>
    public int? IncreRankNum { get; init; }
    [JsonPropertyName("beta1")]
    public double Beta1 { get; init; } = 0.85;
    [JsonPropertyName("beta2")]
    public double Beta2 { get; init; } = 0.85;
    /// <summary>Weight of AdaLoRA's orthogonality penalty (the authors' reg_orth_coef).</summary>
    public double OrthRegWeight { get; init; } = 0.1;
    /// <summary>Total training steps (for the automatic <see cref="DeltaT"/>).</summary>
    public int? TotalStep { get; init; }

    public double LoraAlpha { get; init; } = 8;
    public double LoraDropout { get; init; }
    public bool FanInFanOut { get; init; }
    public string Bias { get; init; } = "none";
}
