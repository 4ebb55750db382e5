using PeftSharp.Data;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Data;

public class PackingTests
{
    static List<Row> Rows(params string[] texts) =>
        texts.Select(t => ExampleTokenizer.Tokenize(new Example(ExampleKind.Text, default) { Text = t }, ToyTokenizer.Functions(), 64)).ToList();

    [Fact]
    public void Packed_rows_restart_positions_number_segments_and_mask_boundaries()
    {
        var rows = Rows("abc", "de", "fghij", "k");  // lengths 5, 4, 7, 3 with bos/eos
        var packed = Packing.Pack(rows, 10);
        Assert.Equal(2, packed.Count);               // [5+4] [7+3]: the second row is exactly full
        Assert.Equal([0, 1, 2, 3, 4, 0, 1, 2, 3], packed[0].PositionIds!);
        Assert.Equal([1, 1, 1, 1, 1, 2, 2, 2, 2], packed[0].SegmentIds!);
        Assert.Equal(rows[0].InputIds.Concat(rows[1].InputIds), packed[0].InputIds);
        // No example learns to predict the next example's first token (nor its own, which nothing precedes).
        Assert.Equal(-100, packed[0].Labels[0]);
        Assert.Equal(-100, packed[0].Labels[5]);
        Assert.Equal(rows[1].Labels[1..], packed[0].Labels[6..]);
        Assert.Equal([0, 1, 2, 3, 4, 5, 6, 0, 1, 2], packed[1].PositionIds!);
    }

    [Fact]
    public void Collate_pads_and_carries_packing_tensors()
    {
        var packed = Packing.Pack(Rows("abc", "de", "fghij"), 10);
        using var b = Batch.Collate(packed, padId: 0);
        Assert.Equal([2L, 9L], b.InputIds.shape);
        Assert.Equal([1L, 1, 1, 1, 1, 1, 1, 0, 0], b.AttentionMask[1].data<long>().ToArray());
        Assert.Equal([1L, 1, 1, 1, 1, 1, 1, 0, 0], b.SegmentIds![1].data<long>().ToArray());
        Assert.Equal(-100L, b.Labels![1, 8].item<long>());
        Assert.Equal(0L, b.InputIds[1, 8].item<long>());
        // Targets: 4 + 3 in row 0, 6 in row 1 (first label of each example masked).
        Assert.Equal(13, b.LossTokens);
        Assert.Equal(16, b.Tokens);
    }

    [Fact]
    public void Block_causal_mask_keeps_segments_apart()
    {
        using var seg = tensor(new long[] { 1, 1, 2, 2, 0 }).unsqueeze(0);
        using var m = Batch.BlockCausalMask(seg);
        Assert.Equal([1L, 1, 5, 5], m.shape);
        var allowed = m[0, 0].data<bool>().ToArray();
        bool A(int q, int k) => allowed[q * 5 + k];
        Assert.True(A(1, 0) && A(1, 1) && A(3, 2));
        Assert.False(A(0, 1));           // causal
        Assert.False(A(2, 1));           // other segment
        Assert.False(A(4, 4));           // padding attends nowhere
    }

    [Fact]
    public void Packing_gives_the_same_per_example_loss_as_unpacked_batches()
    {
        var rows = Rows("hello", "a longer example", "x", "packing!", "abc def", "tiny", "the end of it");
        using var model = new ToyLm(seed: 3);
        using var _ = no_grad();

        using var unpacked = Batch.Collate(rows, 0);
        var expected = new List<double>();
        using (var losses = model.TokenLosses(unpacked))
            for (var i = 0; i < rows.Count; i++) expected.Add(losses[i].sum().item<float>());

        var packed = Packing.Pack(rows, 24);
        Assert.True(packed.Count < rows.Count);
        using var batch = Batch.Collate(packed, 0);
        using var tokenLosses = model.TokenLosses(batch);
        var actual = new List<double>();
        for (var r = 0; r < packed.Count; r++)
        {
            // A target at position t+1 belongs to the segment of t+1; group the losses by it, in order.
            var segs = packed[r].SegmentIds!;
            var l = tokenLosses[r].data<float>().ToArray();
            foreach (var s in segs.Distinct())
                actual.Add(Enumerable.Range(0, segs.Length - 1).Where(t => segs[t + 1] == s).Sum(t => (double)l[t]));
        }
        Assert.Equal(expected.Count, actual.Count);
        for (var i = 0; i < expected.Count; i++) Assert.True(Math.Abs(expected[i] - actual[i]) < 1e-4, $"example {i}: {expected[i]} vs {actual[i]}");
        // And the batch mean loss over all targets is the same too.
        using var lu = model.Loss(unpacked);
        using var lp = model.Loss(batch);
        Assert.Equal(lu.item<float>(), lp.item<float>(), 1e-5f);
    }
}
