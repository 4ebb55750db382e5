namespace PeftSharp.Tuners.Poly;

/// <summary>
/// Polytropon (Ponti et al., 2022, https://arxiv.org/abs/2202.13914) and Multi-Head Routing (Caccia et al., 2022,
/// https://arxiv.org/abs/2211.03831): per adapted layer an inventory of <c>n_skills</c> LoRA modules, and per task a
/// learned routing over them. With <c>n_splits</c> = q > 1 (MHR) the rank's input and output are cut into q blocks,
/// each routed on its own: A_t = [Σ_s w_t[1,s] A[1,s]; ...; Σ_s w_t[q,s] A[q,s]], likewise B_t, and
/// h = W x + x A_t B_t / r. JSON names are PEFT 0.21's <c>PolyConfig</c>.
/// </summary>
public sealed record PolyConfig : LayerTunerConfig
{
    public override string PeftType => "POLY";
    public int R { get; init; } = 8;
    /// <summary>true: B = 0 (the model is unchanged); false: B random too (for tests).</summary>
    public bool InitWeights { get; init; } = true;
    /// <summary>Only "poly" exists (PEFT has no other router).</summary>
    public string PolyType { get; init; } = "poly";
    /// <summary>Tasks the router knows; every row's task id must be below it.</summary>
    public int NTasks { get; init; } = 1;
    /// <summary>LoRA modules ("skills") in each layer's inventory.</summary>
    public int NSkills { get; init; } = 4;
    /// <summary>Blocks of the rank routed separately; above 1 this is MHR. Must divide in and out features.</summary>
    public int NSplits { get; init; } = 1;
}
