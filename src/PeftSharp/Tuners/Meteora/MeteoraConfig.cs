using System.Text.Json.Serialization;

namespace PeftSharp.Tuners.Meteora;

/// <summary>
/// MeteoRA (Xu et al., 2024, https://arxiv.org/abs/2405.13053; github.com/NJUDeepEngine/meteora): L independently trained
/// LoRA adapters, frozen, embedded in each adapted layer, and a trained per-layer gate G [L, in] that picks the top-k of
/// them per token: h = W x + Σ_{i ∈ top-k(G x)} softmax_top-k(G x)_i s_i B_i A_i x (top-1: weight 1). As in the paper's
/// code the mixture embeds the adapters' weights (<c>lora_A</c> [L·r, in], <c>lora_B</c> [out, L·r]) beside the gate
/// (<c>moe_gate</c>); <see cref="Adapters"/> records where they came from. Our own <c>peft_type</c>: PEFT has no MeteoRA.
/// </summary>
public sealed record MeteoraConfig : LayerTunerConfig
{
    public override string PeftType => "METEORA";
    /// <summary>The LoRA adapter folders mixed, in expert order; read when the mixture is created, not when it is loaded.</summary>
    public string[] Adapters { get; init; } = [];
    /// <summary>Every adapter's rank (they must share it); 0: taken from the adapters.</summary>
    public int R { get; init; }
    /// <summary>Each adapter's LoRA scaling (alpha/r, or alpha/√r with rsLoRA), in <see cref="Adapters"/> order; filled from them.</summary>
    public double[] Scalings { get; init; } = [];
    public int TopK { get; init; } = 2;

    /// <summary>False when saved weights will be loaded over the mixture: the adapter folders are not read again.</summary>
    [JsonIgnore]
    public bool ReadAdapters { get; init; } = true;
}
