using PeftSharp.Tuners.PromptLearning;

namespace PeftSharp.Tuners.PTuning;

/// <summary>
/// P-tuning (Liu et al., 2021, "GPT Understands, Too", https://arxiv.org/abs/2103.10385): like prompt tuning, n virtual
/// token vectors are prepended to the embeddings, but they are produced by a small network h = f(E) over n trained
/// embeddings E, an MLP or a bidirectional LSTM followed by an MLP, which makes them easier to optimise.
/// JSON names are PEFT 0.21's <c>PromptEncoderConfig</c> (peft_type P_TUNING).
/// </summary>
public sealed record PromptEncoderConfig : PromptLearningConfig
{
    public override string PeftType => "P_TUNING";
    /// <summary>"MLP" or "LSTM".</summary>
    public string EncoderReparameterizationType { get; init; } = "MLP";
    /// <summary>Defaults to token_dim.</summary>
    public int? EncoderHiddenSize { get; init; }
    /// <summary>LSTM layers; the MLP always has three linear layers (PEFT ignores this for it too).</summary>
    public int EncoderNumLayers { get; init; } = 2;
    public double EncoderDropout { get; init; }
}
