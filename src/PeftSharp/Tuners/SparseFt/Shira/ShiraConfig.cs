namespace PeftSharp.Tuners.SparseFt.Shira;

/// <summary>
/// SHiRA (Bhardwaj et al. 2024, "Sparse High Rank Adapters", https://arxiv.org/abs/2406.13175) in PEFT's format:
/// per Linear [out, in], r(out + in) entries of a fixed random mask train, h = (W + scaling · S)x with S the sparse
/// matrix of <c>shira_weight</c> at <c>shira_indices</c> (int32 [2, K] rows and columns, row-major order).
/// JSON names are PEFT 0.21's <c>ShiraConfig</c>.
/// </summary>
public sealed record ShiraConfig : LayerTunerConfig
{
    public const string Type = "SHIRA";
    public override string PeftType => Type;
    /// <summary>Sets the budget as LoRA's parameter count at rank r: r(out + in) entries per layer.</summary>
    public int R { get; init; } = 32;
    /// <summary>Only "random" (PEFT's random_mask); a custom mask_fn cannot travel in a config file.</summary>
    public string MaskType { get; init; } = "random";
    /// <summary>Seed of the torch generator that draws each layer's mask (every layer reseeds it); null: the generator's default seed.</summary>
    public long? RandomSeed { get; init; }
    public bool FanInFanOut { get; init; }
    /// <summary>true: the values start at zero; false: random normal (tests).</summary>
    public bool InitWeights { get; init; } = true;
}
