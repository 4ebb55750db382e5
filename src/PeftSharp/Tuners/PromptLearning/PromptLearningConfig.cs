using System.Text.Json.Serialization;
using PeftSharp.Models;

namespace PeftSharp.Tuners.PromptLearning;

/// <summary>
/// Fields PEFT's prompt-learning configs share (<c>PromptLearningConfig</c>). The model-shaped ones
/// (<c>token_dim</c>, <c>num_attention_heads</c>, <c>num_layers</c>) may be null: they are then read from the model,
/// as PEFT's <c>_prepare_prompt_learning_config</c> does.
/// </summary>
public abstract record PromptLearningConfig : PeftConfig
{
    /// <summary>Required (PEFT has no default).</summary>
    public int NumVirtualTokens { get; init; }
    public int? TokenDim { get; init; }
    /// <summary>1 for decoder-only and encoder-only models; 2 (encoder-decoder) is not supported.</summary>
    public int? NumTransformerSubmodules { get; init; }
    public int? NumAttentionHeads { get; init; }
    public int? NumLayers { get; init; }
    /// <summary>Kept for the file format; prompt-learning adapters here cannot save extra modules.</summary>
    public string[]? ModulesToSave { get; init; }

    [JsonIgnore]
    public override bool IsPromptLearning => true;

    /// <summary>The model-shaped fields, from the config or else from the model.</summary>
    internal (int TokenDim, int Heads, int Layers) Resolve(ModelConfig m) =>
        (TokenDim ?? m.HiddenSize, NumAttentionHeads ?? m.NumHeads, NumLayers ?? m.NumLayers);

    /// <summary>Checks what every prompt-learning method needs; returns the resolved token dim.</summary>
    internal int Validate(PretrainedModel model)
    {
        if (NumVirtualTokens <= 0)
            throw new ArgumentException($"{PeftType}: num_virtual_tokens must be a positive number (got {NumVirtualTokens})");
        if (NumTransformerSubmodules is { } n && n != 1)
            throw new NotSupportedException($"{PeftType}: num_transformer_submodules={n} is for encoder-decoder models, which PeftSharp does not have");
        if (ModulesToSave is { Length: > 0 })
            throw new NotSupportedException($"{PeftType}: modules_to_save is not supported with prompt-learning methods here; leave it empty");
        return Resolve(model.Config).TokenDim;
    }
}
