using System.Text.Json.Serialization;

namespace PeftSharp.Tuners.SparseFt;

/// <summary>
/// Sparse fine-tuning: a chosen few entries of each target weight change, and the adapter is the change itself,
/// a sparse delta per weight (flat int64 indices into the weight as stored, and float32 values):
/// W' = W + scatter(indices, values). Our own <c>peft_type</c> "SPARSE_FT" (PEFT has only SHiRA's fixed random mask,
/// <see cref="Shira.ShiraConfig"/>); <see cref="Method"/> names how the entries are chosen and re-chosen while training
/// (<see cref="SparseMethods"/>), and the method's settings sit beside it.
/// </summary>
public sealed record SparseFtConfig : LayerTunerConfig
{
    public const string Type = "SPARSE_FT";
    public override string PeftType => Type;

    /// <summary>How the entries are chosen: random-mask, magnitude, spiel, lt-sft, lift, sara, ... (see <see cref="SparseMethods"/>).</summary>
    public string Method { get; init; } = "random-mask";
    /// <summary>Share of each target weight's entries that may change: ceil(density x numel) of them, exactly.</summary>
    public double Density { get; init; } = 0.01;
    /// <summary>Seed of the random initial mask (layer i draws with seed random_seed + i).</summary>
    public long RandomSeed { get; init; }
    /// <summary>false: values start random instead of zero (tests only: a fresh adapter then changes the model).</summary>
    public bool InitWeights { get; init; } = true;
    /// <summary>Optimizer steps between re-selections of the entries (SpIEL's regrowth, LIFT's mask refresh); 0: never.</summary>
    public int ReselectionSteps { get; init; } = 20;
    /// <summary>The run's optimizer steps, for schedules that decay over the run (SpIEL) or split it (LT-SFT).</summary>
    public int TotalSteps { get; init; }

    /// <summary>Set for injection before saved tensors are loaded: the initial support is not computed.</summary>
    [JsonIgnore]
    internal bool Loading { get; init; }

    public SpielSettings Spiel { get; init; } = new();
    [JsonPropertyName("lt_sft")]
    public LtSftSettings LtSft { get; init; } = new();
    public LiftSettings Lift { get; init; } = new();
    public SaraSettings Sara { get; init; } = new();
}

/// <summary>SpIEL's regrowth (Ansell et al. 2024); see <see cref="Spiel.SpielMethod"/>.</summary>
public sealed record SpielSettings
{
    /// <summary>s: the gradients of all entries are gathered over steps 1..s, then jk..jk+s, and the support is re-chosen after each window (1 ≤ s ≤ k − 2).</summary>
    public int SelectionAccumulationSteps { get; init; } = 5;
    /// <summary>p₀: share of the active entries that may be replaced after step t, p₀(1 − t/T); the first reselection (after step s) may replace all.</summary>
    public double InitialReselectionRate { get; init; } = 0.2;
}

/// <summary>LT-SFT's two phases (Ansell et al. 2021); see <see cref="LtSft.LtSftMethod"/>.</summary>
public sealed record LtSftSettings
{
    /// <summary>Steps of phase 1 (dense training of the whole target weights); 0: half the run.</summary>
    [JsonPropertyName("phase1_steps")]
    public int Phase1Steps { get; init; }
}

/// <summary>LIFT's principal weights (Liu et al. 2025); see <see cref="Lift.LiftMethod"/>.</summary>
public sealed record LiftSettings
{
    /// <summary>Rank r of the approximation whose largest entries are trained.</summary>
    public int Rank { get; init; } = 8;
}
