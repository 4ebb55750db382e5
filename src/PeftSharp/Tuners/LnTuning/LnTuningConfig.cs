namespace PeftSharp.Tuners.LnTuning;

/// <summary>
/// LayerNorm tuning (Zhao et al., 2023, "Tuning LayerNorm in Attention", https://arxiv.org/abs/2312.11420): each
/// targeted normalisation layer gets a trainable copy of its weight (and bias) per adapter; nothing else trains.
/// JSON names are PEFT 0.21's <c>LNTuningConfig</c> (peft_type LN_TUNING). Without <c>target_modules</c>, PEFT's
/// per-architecture defaults are used.
/// </summary>
public sealed record LnTuningConfig : LayerTunerConfig
{
    public override string PeftType => "LN_TUNING";

    /// <summary>PEFT's TRANSFORMERS_MODELS_TO_LNTUNING_TARGET_MODULES_MAPPING (bert is ours: PEFT has no default for it).</summary>
    public static string[]? DefaultTargets(string modelType) => modelType switch
    {
        "llama" or "mistral" => ["input_layernorm", "post_attention_layernorm", "norm"],
        "qwen2" or "qwen3" => ["post_attention_layernorm"],
        "gemma2" or "gemma3_text" => ["input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm", "norm"],
        "gpt2" => ["ln_1", "ln_2", "ln_f"],
        "bert" => ["LayerNorm"],
        _ => null,
    };
}
