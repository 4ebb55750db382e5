using System.Text.Json.Serialization;

namespace PeftSharp.Tuners.Miss;

/// <summary>
/// MiSS (Kang and Yin, 2024, https://arxiv.org/abs/2409.15371; formerly Bone): one small shared block per layer.
/// Default ("balance", Bone's mode): dW [out, in] repeats a block M [r, out] along the input, dW[o, i] = M[i mod r, o].
/// "mini": M is itself a [r, mini_r] block tiled along the output. "bat": a block B_a [r, r] per output block row,
/// applied to the weight's own r×r blocks: W'_ab = W_ab (I + B_a) + B_a. JSON names are PEFT 0.21's <c>MissConfig</c>.
/// </summary>
public sealed record MissConfig : LayerTunerConfig
{
    public override string PeftType => "MISS";
    /// <summary>Block size along the input (and, for "bat", along the output too).</summary>
    public int R { get; init; } = 64;
    public double MissDropout { get; init; }
    /// <summary>"mini" only: the block's width along the output; out_features must be a multiple.</summary>
    public int MiniR { get; init; } = 1;
    /// <summary>true (balance, zero block), false (balance, random block: for tests), "bat" or "mini" (zero blocks).</summary>
    [JsonConverter(typeof(BoolOrStringConverter))]
    public string InitWeights { get; init; } = "true";
    /// <summary>Only "none" is supported.</summary>
    public string Bias { get; init; } = "none";
}
