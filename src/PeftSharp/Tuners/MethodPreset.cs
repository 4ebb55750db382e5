using PeftSharp.Models;

namespace PeftSharp.Tuners;

/// <summary>A <c>--method</c> name and the adapter config it builds from a training run's settings.</summary>
public sealed record MethodPreset(string Name, Func<PresetSettings, PeftConfig> Build);

/// <summary>
/// What a training run says about the adapter to build: the <c>--lora-*</c> flags, the task and the model.
/// Each method takes what applies to it and its usual defaults for the rest.
/// </summary>
/// <param name="TotalSteps">the run's optimizer steps (AdaLoRA schedules its rank budget over them).</param>
public sealed record PresetSettings(int R, double Alpha, double Dropout, string[] TargetModules, bool UseRslora, bool UseDora,
    string TaskType, string? BaseModel, ModelConfig Model, int TotalSteps)
{
    /// <summary>Sparse fine-tuning: share of each target weight's entries that may change.</summary>
    public double Density { get; init; } = 0.01;
    /// <summary>Sparse fine-tuning: steps between re-selections of the trained entries.</summary>
    public int ReselectionSteps { get; init; } = 20;
    /// <summary>The run's seed (random masks).</summary>
    public long Seed { get; init; }

    public bool AllLinear => TargetModules is ["all-linear"];
    public ModuleSelector Targets => ModuleSelector.Of(TargetModules);

    /// <summary>The targets, with "all-linear" narrowed to the attention projections (for methods meant for those).</summary>
    public ModuleSelector AttentionOrTargets => AllLinear ? ModuleSelector.Of(AttentionNames(Model)) : Targets;

    static string[] AttentionNames(ModelConfig m) => m.ModelType switch
    {
        "gpt2" => ["c_attn"],
        "bert" => ["query", "value"],
        "phi3" => ["qkv_proj"], // fused; PEFT has no default for phi3
        _ => ["q_proj", "v_proj"],
    };
}
