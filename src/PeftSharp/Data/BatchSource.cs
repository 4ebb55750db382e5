using static TorchSharp.torch;

namespace PeftSharp.Data;

/// <summary>
/// Rows and how to cut them into micro-batches. The order of an epoch is a pure function of (seed, epoch), so a
/// resumed run needs only the epoch and the position in it to see exactly the batches it would have seen.
/// </summary>
public sealed class BatchSource(IReadOnlyList<Row> rows, int padId)
{
    public IReadOnlyList<Row> Rows { get; } = rows;
    public int PadId { get; } = padId;
    public int Count => Rows.Count;

    /// <summary>Number of micro-batches of <paramref name="batchSize"/> in one epoch (the last may be short).</summary>
    public int MicroBatchesPerEpoch(int batchSize) => (Count + batchSize - 1) / batchSize;

    /// <summary>Micro-batch <paramref name="index"/> of an epoch ordered by <paramref name="order"/>.</summary>
    public Batch MicroBatch(int[] order, int index, int batchSize)
    {
        var from = index * batchSize;
        var to = Math.Min(from + batchSize, order.Length);
        return Batch.Collate(order[from..to].Select(i => Rows[i]).ToList(), PadId);
    }

    /// <summary>Row order for an epoch: 0..N-1, or a seeded permutation when <paramref name="shuffle"/>.</summary>
    public int[] EpochOrder(int epoch, long seed, bool shuffle)
    {
        var order = Enumerable.Range(0, Count).ToArray();
        if (shuffle) SeededRandom.Shuffle(order, SeededRandom.Mix(seed, epoch));
        return order;
    }

    /// <summary>
    /// Pre-tokenised sequences as a [N,T] integer tensor, each row trained on every token (labels = inputs),
    /// as the PEFT reference training traces do.
    /// </summary>
    public static BatchSource FromInputIds(Tensor inputIds, int padId = 0)
    {
        if (inputIds.dim() != 2) throw new ArgumentException($"input_ids must be [N,T], got [{string.Join(",", inputIds.shape)}]");
        using var cpu = inputIds.to(ScalarType.Int32).cpu().contiguous();
        var flat = cpu.data<int>().ToArray();
        var (n, t) = ((int)inputIds.shape[0], (int)inputIds.shape[1]);
        var rows = new Row[n];
        for (var i = 0; i < n; i++)
        {
            var ids = flat[(i * t)..((i + 1) * t)];
            rows[i] = new Row(ids, ids);
        }
        return new BatchSource(rows, padId);
    }
}

/// <summary>
/// A small deterministic generator (SplitMix64) for data order and splits: the same seed gives the same order on every
/// machine and .NET version, which <see cref="Random"/> does not promise.
/// </summary>
public static class SeededRandom
{
    public static ulong Mix(long seed, long stream)
    {
        var x = (ulong)seed * 0x9E3779B97F4A7C15UL ^ (ulong)stream * 0xBF58476D1CE4E5B9UL;
        return Next(ref x);
    }

    public static ulong Next(ref ulong state)
    {
        var z = state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>Fisher-Yates with an unbiased bounded draw.</summary>
    public static void Shuffle<T>(T[] items, ulong state)
    {
        for (var i = items.Length - 1; i > 0; i--)
        {
            var bound = (ulong)(i + 1);
            var threshold = (0UL - bound) % bound;
            ulong r;
            do r = Next(ref state); while (r < threshold);
            var j = (int)(r % bound);
            (items[i], items[j]) = (items[j], items[i]);
        }
    }
}
