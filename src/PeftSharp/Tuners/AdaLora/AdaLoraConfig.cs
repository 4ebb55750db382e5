using System.Text.Json.Serialization;

namespace PeftSharp.Tuners.AdaLora;

/// <summary>
/// AdaLoRA (Zhang et al., 2023, https://arxiv.org/abs/2303.10512): LoRA in SVD form, dW = P Λ Q (PEFT:
/// <c>lora_B</c> [out, r], <c>lora_E</c> [r, 1], <c>lora_A</c> [r, in]) scaled by alpha / init_r, whose singular
/// values are pruned during training from <see cref="InitR"/> per layer down to a total of <see cref="TargetR"/> per
/// layer, by sensitivity (see <see cref="RankAllocator"/>). JSON names are PEFT 0.21's <c>AdaLoraConfig</c>.
/// </summary>
public sealed record AdaLoraConfig : LayerTunerConfig
{
    public override string PeftType => "ADALORA";
    /// <summary>Average rank per layer at the end of the budget schedule.</summary>
    public int TargetR { get; init; } = 8;
    /// <summary>Rank every layer starts with.</summary>
    public int InitR { get; init; } = 12;
    /// <summary>Steps of warm-up before any rank is pruned.</summary>
    public int Tinit { get; init; }
    /// <summary>Steps at the end that train with the final ranks fixed.</summary>
    public int Tfinal { get; init; }
    /// <summary>Prune every deltaT steps while the budget shrinks.</summary>
    [JsonPropertyName("deltaT")]
    public int DeltaT { get; init; } = 1;
    /// <summary>EMA factor of the sensitivity |p ⊙ grad|.</summary>
    [JsonPropertyName("beta1")]
    public double Beta1 { get; init; } = 0.85;
    /// <summary>EMA factor of the sensitivity's uncertainty.</summary>
    [JsonPropertyName("beta2")]
    public double Beta2 { get; init; } = 0.85;
    /// <summary>Weight of the orthogonality penalty ||PᵀP - I|| + ||QQᵀ - I|| added to the loss.</summary>
    public double OrthRegWeight { get; init; } = 0.5;
    /// <summary>Total training steps; the budget schedule needs it.</summary>
    public int? TotalStep { get; init; }
    /// <summary>Which singular values each layer kept ("&lt;path&gt;.lora_E" → mask), as PEFT writes after training; adapters saved with it hold only the kept ones.</summary>
    public Dictionary<string, bool[]>? RankPattern { get; init; }

    // LoRA fields AdaLoRA reads (PEFT's AdaLoraConfig extends LoraConfig). `r` is ignored: init_r is the rank.
    public int R { get; init; } = 8;
    public double LoraAlpha { get; init; } = 8;
    public double LoraDropout { get; init; }
    public bool FanInFanOut { get; init; }
    public string Bias { get; init; } = "none";
    /// <summary>true: Λ = 0, P and Q normal(0, 0.02) (the model is unchanged); false: all standard normal (for tests).</summary>
    public bool InitLoraWeights { get; init; } = true;
    public bool UseRslora { get; init; }
    public bool UseDora { get; init; }
    public bool LoraBias { get; init; }
    public Dictionary<string, double> AlphaPattern { get; init; } = new();

    /// <summary>Set by the tuner when loading: size each layer by <see cref="RankPattern"/> (as PEFT does on load only).</summary>
    [JsonIgnore]
    internal bool SizeByRankPattern { get; init; }

    /// <summary>The kept-singular-value mask for the module at <paramref name="path"/>, if the rank pattern has one.</summary>
    public bool[]? RankMaskFor(string path, string adapter) =>
        RankPattern?.GetValueOrDefault($"{path}.lora_E") ?? RankPattern?.GetValueOrDefault($"{path}.lora_E.{adapter}");
}
