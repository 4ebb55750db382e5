namespace PeftSharp.Tuners.Lora;

/// <summary>The keys of PEFT's <c>LoraConfig</c> that PeftSharp reads without modelling, or refuses (AdaLoRA's config extends it).</summary>
internal static class LoraKeys
{
    /// <summary>Written by PEFT, no effect on what a loaded adapter computes: runtime and init-only settings, defaults of unused options.</summary>
    public static readonly IReadOnlySet<string> Unused = new HashSet<string>
    {
        "auto_mapping", "corda_config", "eva_config", "loftq_config", "lora_ga_config", "megatron_config", "megatron_core",
        "qalora_group_size", "runtime_config",
    };

    /// <summary>
    /// Options that change what the adapter computes and that PeftSharp does not implement: aLoRA's invocation tokens,
    /// layer replication, trainable tokens, adapted parameters (MoE experts), QALoRA, block-diagonal LoRA, Arrow
    /// routing, MonteCLoRA, VeLoRA, KaSA, weight tying.
    /// </summary>
    public static readonly IReadOnlySet<string> Unsupported = new HashSet<string>
    {
        "alora_invocation_tokens", "arrow_config", "ensure_weight_tying", "kasa_config", "layer_replication", "monteclora_config",
        "target_parameters", "trainable_token_indices", "use_bdlora", "use_qalora", "velora_config",
    };
}
