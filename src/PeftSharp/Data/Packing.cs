namespace PeftSharp.Data;

/// <summary>
/// Packs short rows into rows of up to <c>length</c> tokens, the way TRL's padding-free packing does:
/// several examples share a row but not attention. Each example keeps its own position ids (restarting at 0) and a
/// segment id (1, 2, ... within the row; 0 is padding) from which the model builds a block-diagonal causal mask.
/// The first label of every example is -100, so no example learns to predict the next one's first token; an
/// unpacked row never trains on its first label either (nothing precedes it), so per-example losses are unchanged.
/// </summary>
public static class Packing
{
    /// <summary>
    /// Greedy, in order: a row is filled with consecutive examples until the next one does not fit.
    /// Examples must already be truncated to <paramref name="length"/>.
    /// </summary>
    public static IReadOnlyList<Row> Pack(IReadOnlyList<Row> rows, int length)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(length, 1);
        var packed = new List<Row>();
        var ids = new List<int>(length);
        var labels = new List<int>(length);
        var positions = new List<int>(length);
        var segments = new List<int>(length);
        var segment = 0;
        foreach (var row in rows)
        {
            if (row.ClassLabel is not null) throw new InvalidOperationException("packing is for language modelling; sequence classification rows cannot be packed");
            if (row.TaskId is not null) throw new InvalidOperationException("packing would put records of different tasks in one row; records with a 'task_id' cannot be packed");
            if (row.InputIds.Length > length) throw new ArgumentException($"a row of {row.InputIds.Length} tokens is longer than the packing length {length}; truncate first");
            if (ids.Count + row.InputIds.Length > length) Flush();
            segment++;
            ids.AddRange(row.InputIds);
            labels.AddRange(row.Labels);
            labels[^row.Labels.Length] = ExampleTokenizer.Ignore;
            for (var i = 0; i < row.InputIds.Length; i++)
            {
                positions.Add(i);
                segments.Add(segment);
            }
        }
        Flush();
        return packed;

        void Flush()
        {
            if (ids.Count == 0) return;
            packed.Add(new Row(ids.ToArray(), labels.ToArray(), positions.ToArray(), segments.ToArray()));
            ids.Clear(); labels.Clear(); positions.Clear(); segments.Clear();
            segment = 0;
        }
    }
}
