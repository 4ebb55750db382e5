using System.Text.Json;
using System.Text.Json.Serialization;

namespace PeftSharp.Tuners;

/// <summary>
/// Fields every PEFT <c>adapter_config.json</c> has. Property names map to PEFT's JSON names by snake_case
/// (<see cref="PeftConfigJson.Options"/>), so a config moves between Python and .NET unchanged.
/// Keys we do not model are kept in <see cref="Extra"/> and written back.
/// </summary>
public abstract record PeftConfig
{
    public abstract string PeftType { get; }
    public string? TaskType { get; init; }
    public string? BaseModelNameOrPath { get; init; }
    public string? Revision { get; init; }
    public bool InferenceMode { get; init; }
    public string? PeftVersion { get; init; } = PeftConfigJson.PeftVersion;

    [JsonExtensionData]
    public Dictionary<string, JsonElement>? Extra { get; init; }

    /// <summary>Prompt-learning methods change the inputs rather than wrapping layers.</summary>
    [JsonIgnore]
    public virtual bool IsPromptLearning => false;
}

/// <summary>Fields of methods that wrap chosen layers (LoRA, IA3, LoHa, ...): PEFT's targeting rules.</summary>
public abstract record LayerTunerConfig : PeftConfig
{
    public ModuleSelector? TargetModules { get; init; }
    public ModuleSelector? ExcludeModules { get; init; }
    [JsonConverter(typeof(IntOrListConverter))]
    public int[]? LayersToTransform { get; init; }
    [JsonConverter(typeof(StringOrListConverter))]
    public string[]? LayersPattern { get; init; }
    public string[]? ModulesToSave { get; init; }
}
