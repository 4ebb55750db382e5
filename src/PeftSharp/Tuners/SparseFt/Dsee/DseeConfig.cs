namespace PeftSharp.Tuners.SparseFt.Dsee;

/// <summary>
/// DSEE (Chen et al. 2021, "DSEE: Dually Sparsity-embedded Efficient Tuning of Pre-trained Language Models",
/// https://arxiv.org/abs/2111.00160; code: VITA-Group/DSEE): the update is low-rank plus sparse,
/// ΔW = (α/r) B A + S₂, where B A is LoRA and S₂ is trained on a fixed support Ω taken from a robust-PCA-style
/// decomposition of the pretrained weight, W ≈ L + S with rank(L) ≤ k and |S|₀ ≤ K: Ω = supp(S), the K largest
/// entries of |W − L|. The decomposition runs GoDec's alternation (Zhou and Tao 2011), as DSEE does:
/// L ← SVD_k(W − S), S ← P_K(W − L) (keep the K largest magnitudes), from S = 0.
/// Our own <c>peft_type</c> "DSEE"; one adapter holds both parts, saved per target as <c>lora_A</c> [r, in],
/// <c>lora_B</c> [out, r], <c>sparse_indices</c> [K] int64 (flat, row-major into W [out, in]) and
/// <c>sparse_values</c> [K] float32. (DSEE's second sparsity, pruning the final weights, is not implemented.)
/// </summary>
public sealed record DseeConfig : LayerTunerConfig
{
    public const string Type = "DSEE";
    public override string PeftType => Type;
    public int R { get; init; } = 8;
    public double LoraAlpha { get; init; } = 16;
    public double LoraDropout { get; init; }
    /// <summary>Share of each target weight's entries in the sparse part: K = ceil(density x numel).</summary>
    public double Density { get; init; } = 0.01;
    /// <summary>Rank k of the low-rank part L of the decomposition W ≈ L + S.</summary>
    public int DecompositionRank { get; init; } = 8;
    /// <summary>GoDec alternations; DSEE's code runs a handful.</summary>
    public int DecompositionIterations { get; init; } = 5;
    /// <summary>true: B = 0 and the sparse values 0 (the model is unchanged); false: both random (tests).</summary>
    public bool InitWeights { get; init; } = true;

    /// <summary>Set for injection before saved tensors are loaded: the decomposition is not run.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    internal bool Loading { get; init; }
}
