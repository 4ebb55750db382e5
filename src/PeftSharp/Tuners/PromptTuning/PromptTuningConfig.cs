using System.Text.Json;
using System.Text.Json.Serialization;
using PeftSharp.Tuners.PromptLearning;

namespace PeftSharp.Tuners.PromptTuning;

/// <summary>
/// Prompt tuning (Lester et al., 2021, https://arxiv.org/abs/2104.08691): n trained vectors P [n, H] are prepended
/// to the token embeddings, [P; E(x)], and the model is frozen. JSON names are PEFT 0.21's <c>PromptTuningConfig</c>.
/// </summary>
public sealed record PromptTuningConfig : PromptLearningConfig
{
    public override string PeftType => "PROMPT_TUNING";
    /// <summary>"RANDOM" (N(0,1), as nn.Embedding), "TEXT" (embeddings of <see cref="PromptTuningInitText"/>'s tokens,
    /// repeated or cut to n) or "SAMPLE_VOCAB" (embeddings of random vocabulary tokens).</summary>
    public string PromptTuningInit { get; init; } = "RANDOM";
    public string? PromptTuningInitText { get; init; }
    /// <summary>Recorded for PEFT; PeftSharp tokenizes with <see cref="Tokenizer"/>.</summary>
    public string? TokenizerNameOrPath { get; init; }
    public Dictionary<string, JsonElement>? TokenizerKwargs { get; init; }

    /// <summary>Text -> token ids, for "TEXT" initialisation (PEFT loads <c>tokenizer_name_or_path</c> instead).</summary>
    [JsonIgnore]
    public Func<string, int[]>? Tokenizer { get; init; }
}
