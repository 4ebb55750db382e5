namespace PeftSharp.Tuners.MixLora;

/// <summary>
/// MixLoRA (Li et al., 2024, https://arxiv.org/abs/2404.15159; github.com/TUDB-Labs/MixLoRA): the feed-forward block
/// becomes a sparse mixture of experts that share the frozen FFN weights, each with its own LoRA on the targeted FFN
/// projections; a top-k router picks experts per token, y = Σ_{k ∈ top-k} w_k FFN_k(x) with the top-k softmax weights
/// renormalised to 1, and training adds the load-balancing loss a · E · Σ_e f_e P_e. Attention projections among the
/// targets get a plain LoRA. JSON names are MixLoRA's <c>adapter_config.json</c>; the tensors are saved in PEFT's layout
/// (<c>...mlp.mixlora_gate.weight</c>, <c>...mlp.mixlora_experts.{e}.{proj}.lora_A.weight</c>, attention <c>lora_A</c>/<c>lora_B</c>).
/// </summary>
public sealed record MixLoraConfig : LayerTunerConfig
{
    public override string PeftType => "MIXLORA";
    public int R { get; init; } = 8;
    public double LoraAlpha { get; init; } = 16;
    public double LoraDropout { get; init; }
    /// <summary>Scale by alpha/√r instead of alpha/r (attention LoRA and experts alike).</summary>
    public bool UseRslora { get; init; }
    /// <summary>Only "mixtral" (top-k softmax routing) exists in MixLoRA.</summary>
    public string RoutingStrategy { get; init; } = "mixtral";
    public int NumExperts { get; init; } = 8;
    public int TopK { get; init; } = 2;
    /// <summary>a in the load-balancing loss a · E · Σ_e f_e P_e (MixLoRA's default 0.001).</summary>
    public double RouterAuxLossCoef { get; init; } = 0.001;
    /// <summary>Whether training adds the load-balancing loss at all.</summary>
    public bool RouterLoss { get; init; } = true;
    /// <summary>Standard deviation of the router's normal initialisation.</summary>
    public double RouterInitRange { get; init; } = 0.02;
    /// <summary>In training, the router's input is multiplied by U(1 - j, 1 + j) noise.</summary>
    public double JitterNoise { get; init; }
}
