namespace PeftSharp.Tuners.Hydra;

/// <summary>
/// Hydra (Kim et al., 2023, https://arxiv.org/abs/2309.06922): LoRA's parallel branch plus a sequential one that adapts
/// the base layer's output, h = W0 x + s B A x + s B' A' W0 x with s = alpha / r, A [r, in], B [out, r], A' [r, out],
/// B' [out, r]. Both branches start with B zero (the model is unchanged) and the whole is a weight delta,
/// s (B A + B' A' W0), so it merges. PEFT has no Hydra: <c>peft_type</c> "HYDRA" is ours; the other names are
/// <c>LoraConfig</c>'s.
/// </summary>
public sealed record HydraConfig : LayerTunerConfig
{
    public override string PeftType => "HYDRA";
    /// <summary>Rank of each branch.</summary>
    public int R { get; init; } = 8;
    public double LoraAlpha { get; init; } = 8;
    /// <summary>Dropout on each branch's input (x for the parallel branch, W0 x for the sequential one).</summary>
    public double LoraDropout { get; init; }
    public bool FanInFanOut { get; init; }
    /// <summary>Only "none": the sequential branch reads W0 x without the base bias, so the delta stays a weight delta.</summary>
    public string Bias { get; init; } = "none";
    /// <summary>true: A and A' kaiming-uniform, B and B' zero (LoRA's init); false: B and B' random too (for tests).</summary>
    public bool InitLoraWeights { get; init; } = true;
}
