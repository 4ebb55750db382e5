namespace PeftSharp.Generation;

/// <summary>Decoding settings with transformers' meanings. Greedy unless <see cref="DoSample"/>.</summary>
public sealed record GenerationOptions
{
    public int MaxNewTokens { get; init; } = 64;
    public bool DoSample { get; init; }
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
}
