using static TorchSharp.torch;

namespace PeftSharp.Data;

/// <summary>
/// One micro-batch, as the model's loss function receives it. All tensors are int64.
/// <list type="bullet">
/// <item><see cref="InputIds"/> [B,T], right-padded with the pad id.</item>
/// <item><see cref="Labels"/> [B,T], aligned with the inputs (the model shifts), -100 where not trained; null for classification.</item>
/// <item><see cref="AttentionMask"/> [B,T]: 1 for real tokens, 0 for padding.</item>
/// <item><see cref="PositionIds"/> and <see cref="SegmentIds"/> [B,T]: only for packed rows (segment 0 is padding).</item>
/// <item><see cref="ClassLabels"/> [B]: only for sequence classification.</item>
/// <item><see cref="TaskIds"/> [B]: only when the rows name their task (<c>task_id</c>).</item>
/// </list>
/// <see cref="LossTokens"/> is how many targets the mean loss averages over (so evaluation can weight batches exactly);
/// <see cref="Tokens"/> is the number of real input tokens (for tokens/s).
/// </summary>
public sealed record Batch(Tensor InputIds, Tensor? Labels, Tensor AttentionMask, Tensor? PositionIds, Tensor? SegmentIds,
    Tensor? ClassLabels, long LossTokens, long Tokens) : IDisposable
{
    public Tensor? TaskIds { get; init; }

    public void Dispose()
    {
        TaskIds?.Dispose();
        InputIds.Dispose();
        Labels?.Dispose();
        AttentionMask.Dispose();
        PositionIds?.Dispose();
        SegmentIds?.Dispose();
        ClassLabels?.Dispose();
    }

    /// <summary>
    /// Pads rows to the longest one and stacks them. A batch is either all classification rows or all language-model rows.
    /// </summary>
    public static Batch Collate(IReadOnlyList<Row> rows, int padId)
    {
        if (rows.Count == 0) throw new ArgumentException("cannot collate an empty batch");
        var b = rows.Count;
        var t = rows.Max(r => r.InputIds.Length);
        var classification = rows[0].ClassLabel is not null;
        if (rows.Any(r => (r.ClassLabel is not null) != classification))
            throw new ArgumentException("a batch mixes classification rows and language-model rows");
        var packed = rows.Any(r => r.SegmentIds is not null);
        var tasks = rows.Any(r => r.TaskId is not null);
        if (tasks && rows.Any(r => r.TaskId is null)) throw new ArgumentException("a batch mixes rows with a task_id and rows without one");

        var ids = new long[b * t];
        var labels = new long[b * t];
        var mask = new long[b * t];
        var positions = packed ? new long[b * t] : null;
        var segments = packed ? new long[b * t] : null;
        Array.Fill(ids, padId);
        Array.Fill(labels, ExampleTokenizer.Ignore);
        long lossTokens = 0, tokens = 0;
        for (var i = 0; i < b; i++)
        {
            var r = rows[i];
            var at = i * t;
            for (var j = 0; j < r.InputIds.Length; j++)
            {
                ids[at + j] = r.InputIds[j];
                labels[at + j] = r.Labels[j];
                mask[at + j] = 1;
                if (packed)
                {
                    positions![at + j] = r.PositionIds?[j] ?? j;
                    segments![at + j] = r.SegmentIds?[j] ?? 1;
                }
                // The causal LM shifts labels by one, so position 0's label is never a target.
                if (j > 0 && r.Labels[j] != ExampleTokenizer.Ignore) lossTokens++;
            }
            tokens += r.InputIds.Length;
        }
        if (classification) lossTokens = b;
        long[] shape = [b, t];
        return new Batch(
            tensor(ids, shape),
            classification ? null : tensor(labels, shape),
            tensor(mask, shape),
            packed ? tensor(positions!, shape) : null,
            packed ? tensor(segments!, shape) : null,
            classification ? tensor(rows.Select(r => r.ClassLabel!.Value).ToArray()) : null,
            lossTokens, tokens)
        {
            TaskIds = tasks ? tensor(rows.Select(r => r.TaskId!.Value).ToArray()) : null,
        };
    }

    /// <summary>
    /// The attention a packed batch allows, as [B,1,T,T] booleans (true = may attend): a query sees keys of its own
    /// segment at or before it, and padding (segment 0) sees nothing. For models that take an explicit mask.
    /// </summary>
    public static Tensor BlockCausalMask(Tensor segmentIds)
    {
        using var scope = NewDisposeScope();
        var t = segmentIds.shape[1];
        var sameSegment = segmentIds.unsqueeze(2).eq(segmentIds.unsqueeze(1));            // [B,T,T]
        var causal = ones(t, t, dtype: ScalarType.Bool).tril();                            // [T,T]
        var real = segmentIds.ne(0).unsqueeze(2);                                            // [B,T,1]
        return sameSegment.logical_and(causal).logical_and(real).unsqueeze(1).MoveToOuterDisposeScope();
    }
}
