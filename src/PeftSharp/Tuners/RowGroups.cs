using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Tuners;

/// <summary>
/// One mixed batch's adapter per row, grouped: each adapter with the indices of the rows that use it (rows named by
/// no group run the base alone). Layers that can mix compute each adapter on its rows only and add the result into
/// those rows (PEFT's <c>_mixed_batch_forward</c>). Owns its index tensors.
/// </summary>
public sealed class RowGroups : IDisposable
{
    /// <param name="rowAdapters">one adapter name per row, null for the base model</param>
    /// <param name="device">where the batches will run</param>
    public RowGroups(IReadOnlyList<string?> rowAdapters, Device device)
    {
        Rows = rowAdapters.Count;
        Groups = rowAdapters.Select((a, i) => (a, i)).Where(x => x.a is not null).GroupBy(x => x.a!)
            .Select(g => (g.Key, tensor(g.Select(x => (long)x.i).ToArray(), device: device).DetachFromDisposeScope()))
            .ToList();
    }

    /// <summary>How many rows a batch must have.</summary>
    public int Rows { get; }

    /// <summary>Each adapter used, in order of first use, with its row indices (int64).</summary>
    public IReadOnlyList<(string Adapter, Tensor Rows)> Groups { get; }

    /// <summary>Refuses a batch whose row count is not the one the adapters were named for.</summary>
    public void Check(Tensor x)
    {
        if (x.shape[0] != Rows)
            throw new ArgumentException($"per-row adapters name {Rows} rows but the batch has {x.shape[0]}: give one adapter (or base) per row");
    }

    public void Dispose()
    {
        foreach (var (_, rows) in Groups) rows.Dispose();
    }
}
