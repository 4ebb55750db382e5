using static TorchSharp.torch;

namespace PeftSharp.Models;

/// <summary>
/// What a forward pass takes. Either <see cref="InputIds"/> or <see cref="InputsEmbeds"/> ([B,T,H], used by prompt
/// tuning). <see cref="AttentionMask"/> [B,S] (1 = attend) covers cached and new positions; <see cref="SegmentIds"/>
/// [B,T] keeps packed examples from attending to each other (0 = padding).
/// </summary>
public sealed record ModelInputs
{
    public Tensor? InputIds { get; init; }
    public Tensor? InputsEmbeds { get; init; }
    public Tensor? AttentionMask { get; init; }
    public Tensor? PositionIds { get; init; }
    public Tensor? SegmentIds { get; init; }
    public Tensor? TokenTypeIds { get; init; }
    public KvCache? Cache { get; init; }
    /// <summary>[B] int64: each row's task, for methods that route by task (PEFT's <c>task_ids</c>, Poly); models ignore it.</summary>
    public Tensor? TaskIds { get; init; }

    public static ModelInputs Ids(Tensor inputIds, Tensor? attentionMask = null) => new() { InputIds = inputIds, AttentionMask = attentionMask };

    public long Batch => InputIds?.shape[0] ?? InputsEmbeds!.shape[0];
    public long Length => InputIds?.shape[1] ?? InputsEmbeds!.shape[1];
}
