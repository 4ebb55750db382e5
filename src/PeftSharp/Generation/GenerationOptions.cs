namespace PeftSharp.Generation;

/// <summary>Decoding settings with transformers' meanings. Greedy unless <see cref="DoSample"/>.</summary>
public sealed record GenerationOptions
{
    /// <summary>Most tokens to generate after the prompt; 0 returns the prompt.</summary>
    public int MaxNewTokens { get; init; } = 64;
    public bool DoSample { get; init; }
    /// <summary>Sampling divides the scores by this; it must be positive when sampling (transformers refuses 0 too: turn sampling off for greedy decoding).</summary>
    public double Temperature { get; init; } = 1.0;
    /// <summary>0 = off.</summary>
    public int TopK { get; init; }
    /// <summary>1.0 = off.</summary>
    public double TopP { get; init; } = 1.0;
    /// <summary>1.0 = off; CTRL's penalty (Keskar et al., 2019) on tokens already in the sequence.</summary>
    public double RepetitionPenalty { get; init; } = 1.0;
    public long? Seed { get; init; }
    /// <summary>Stop a sequence when it emits one of these; empty = never stop early.</summary>
    public IReadOnlyList<int> EosTokenIds { get; init; } = [];
    /// <summary>Fills finished sequences and left padding; defaults to the first eos id, else 0.</summary>
    public int? PadTokenId { get; init; }

    /// <summary>Checks ranges as transformers' logits processors do; the message names the option and what it accepts.</summary>
    public GenerationOptions Validate()
    {
        Check(MaxNewTokens >= 0, "max_new_tokens", "must not be negative", MaxNewTokens);
        Check(double.IsFinite(Temperature) && Temperature >= 0, "temperature", "must be a number >= 0", Temperature);
        Check(!DoSample || Temperature > 0, "temperature", "must be positive when sampling (for greedy decoding, do not sample)", Temperature);
        Check(TopK >= 0, "top_k", "must not be negative (0 turns it off)", TopK);
        Check(TopP is >= 0 and <= 1, "top_p", "must be in [0, 1] (1 turns it off)", TopP);
        Check(double.IsFinite(RepetitionPenalty) && RepetitionPenalty > 0, "repetition_penalty", "must be a positive number (1 turns it off)", RepetitionPenalty);
        return this;

        static void Check(bool ok, string name, string rule, double value)
        {
            if (!ok) throw new ArgumentException($"option {name} {rule}; got {value.ToString(System.Globalization.CultureInfo.InvariantCulture)}");
        }
    }
}
