using System.Text.Json.Serialization;
using System.Text.RegularExpressions;

namespace PeftSharp.Tuners.IA3;

/// <summary>
/// (IA)^3 (Liu et al., 2022, https://arxiv.org/abs/2205.05638): a learned vector l rescales activations.
/// Attention-like modules scale their output, h = l ⊙ (W x + b); feed-forward modules scale their input,
/// h = W (l ⊙ x) + b. JSON names are PEFT 0.21's <c>IA3Config</c>.
/// </summary>
public sealed record IA3Config : LayerTunerConfig
{
    public override string PeftType => "IA3";
    /// <summary>Targets whose input (not output) is scaled; a subset of <see cref="LayerTunerConfig.TargetModules"/>.</summary>
    public ModuleSelector? FeedforwardModules { get; init; }
    public bool FanInFanOut { get; init; }
    /// <summary>true: vectors start at 1 (the model is unchanged); false: random normal (for tests).</summary>
    [JsonPropertyName("init_ia3_weights")]
    public bool InitIa3Weights { get; init; } = true;

    /// <summary>PEFT's rule: a regex must match the whole path; a list entry need only end it (no dot boundary).</summary>
    public bool IsFeedforward(string path) => FeedforwardModules switch
    {
        null => false,
        { Regex: { } re } => Regex.IsMatch(path, $"^(?:{re})$"),
        { Names: var names } => names.Any(n => path.EndsWith(n, StringComparison.Ordinal)),
    };
}
