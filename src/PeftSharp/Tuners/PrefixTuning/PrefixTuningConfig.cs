using PeftSharp.Tuners.PromptLearning;

namespace PeftSharp.Tuners.PrefixTuning;

/// <summary>
/// Prefix tuning (Li and Liang, 2021, https://arxiv.org/abs/2101.00190): every layer attends to n trained key/value
/// pairs before the real ones, softmax(q [P_k; K]^T / sqrt(d)) [P_v; V], with the model frozen. The prefix is either
/// trained directly or, with <see cref="PrefixProjection"/>, produced by a two-layer MLP from n embeddings
/// (the paper's reparameterisation). JSON names are PEFT 0.21's <c>PrefixTuningConfig</c>.
/// </summary>
public sealed record PrefixTuningConfig : PromptLearningConfig
{
    public override string PeftType => "PREFIX_TUNING";
    /// <summary>Hidden size of the projection MLP; defaults to token_dim.</summary>
    public int? EncoderHiddenSize { get; init; }
    public bool PrefixProjection { get; init; }
    /// <summary>null: random; "zero": the prefix (or the MLP's last layer) starts at zero.</summary>
    public string? InitWeights { get; init; }
}
