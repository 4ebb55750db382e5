using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.SparseFt;

/// <summary>
/// One adapter's change to one weight: K distinct flat indices into the weight as stored (row-major), and their
/// values. Only <see cref="Values"/> is a parameter, so gradients and optimizer state exist for the K active entries
/// alone; the slots keep their identity when the support changes (an entry that stays keeps its slot and its value).
/// </summary>
public sealed class SparseWeightDelta
{
    public SparseWeightDelta(Tensor indices, Parameter values, long[] shape)
    {
        Indices = indices;
        Values = values;
        Shape = shape;
    }

    /// <summary>[K] int64, distinct, in [0, numel).</summary>
    public Tensor Indices { get; }
    /// <summary>[K] float32: the change at each index.</summary>
    public Parameter Values { get; }
    /// <summary>The base weight's shape as stored.</summary>
    public long[] Shape { get; }
    public long Numel => Shape.Aggregate(1L, (a, b) => a * b);
    public long K => Indices.shape[0];

    /// <summary>
    /// A dense trainable change of the whole weight, used instead of <see cref="Values"/> while set (LT-SFT's phase 1).
    /// </summary>
    public Parameter? Dense { get; set; }

    /// <summary>
    /// A zero tensor of the weight's shape added in the forward while set: after backward its gradient is dL/dW for
    /// every entry, active or not (SpIEL's regrowth reads it). It is not a parameter, so no optimizer sees it.
    /// </summary>
    public Tensor? Probe { get; set; }

    /// <summary>Set while training a structured delta: the layer adds it to its output (<see cref="ISparseSlice"/>), not to W.</summary>
    public ISparseSlice? Slice { get; set; }

    /// <summary>Slots whose entry changed since the trainer last asked: their optimizer state no longer belongs to them.</summary>
    internal List<Tensor> ChangedSlots { get; } = new();

    /// <summary>ceil(density x numel), computed in decimal so that 0.07 x 100 is 7, not 8.</summary>
    public static long Budget(double density, long numel) => (long)Math.Ceiling((decimal)density * numel);

    /// <summary>W + scatter(indices, values) (and the dense change and probe while set), in W's dtype; differentiable in the values.</summary>
    public Tensor AddTo(Tensor weight)
    {
        Tensor result;
        if (Dense is { } dense) result = weight + dense.to(weight.dtype);
        else result = weight.flatten().index_add(0, Indices, Values.to(weight.dtype), 1).view(weight.shape);
        if (Probe is { } probe) result = result + probe.to(weight.dtype);
        return result;
    }

    /// <summary>The change as a dense float32 tensor of the weight's shape.</summary>
    public Tensor ToDense()
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var d = zeros(Numel, dtype: ScalarType.Float32, device: Values.device).index_put_(Values.detach(), Indices).view(Shape);
        return d.MoveToOuterDisposeScope();
    }

    /// <summary>Writes the change into <paramref name="weight"/> in place: only the K entries are touched.</summary>
    public void ScatterAddInto(Tensor weight)
    {
        using var _ = no_grad();
        using var flat = weight.view(-1);
        using var v = Values.detach().to(weight.dtype);
        flat.index_add_(0, Indices, v, 1);
    }

    /// <summary>
    /// Makes <paramref name="support"/> (K distinct indices) the new support. Entries in both keep their slot and
    /// value; entries that leave go back to the base (their value is dropped); entering entries take the freed slots
    /// with value 0, and those slots are noted in <see cref="ChangedSlots"/>. Returns how many entries changed.
    /// </summary>
    public long ReplaceSupport(Tensor support)
    {
        if (support.shape.Length != 1 || support.shape[0] != K)
            throw new ArgumentException($"a new support must have the budget's {K} entries, not {AdapterTensors.Shape(support)}");
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var inNew = zeros(Numel, dtype: ScalarType.Bool, device: Indices.device).index_fill_(0, support, true);
        var inOld = zeros(Numel, dtype: ScalarType.Bool, device: Indices.device).index_fill_(0, Indices, true);
        var freed = nonzero(inNew.index_select(0, Indices).logical_not()).flatten();
        var incoming = support.masked_select(inOld.index_select(0, support).logical_not());
        if (freed.shape[0] != incoming.shape[0]) throw new ArgumentException("a new support must have distinct indices");
        if (freed.shape[0] == 0) return 0;
        Indices.index_put_(incoming, freed);
        Values.index_fill_(0, freed, 0);
        ChangedSlots.Add(freed.DetachFromDisposeScope());
        return ChangedSlots[^1].shape[0];
    }

    /// <summary>
    /// Moves the entries in <paramref name="slots"/> to <paramref name="indices"/> (new, inactive, distinct) with value 0,
    /// slot by slot, for a method that decides which slot takes which entry (SpIEL seeds each slot's optimizer state).
    /// The caller deals with the slots' optimizer state (<see cref="ChangedSlots"/> is left alone).
    /// </summary>
    internal void ReplaceSlots(Tensor slots, Tensor indices)
    {
        if (slots.shape[0] != indices.shape[0]) throw new ArgumentException($"{slots.shape[0]} slots but {indices.shape[0]} new entries");
        using var _ = no_grad();
        Indices.index_put_(indices, slots);
        Values.index_fill_(0, slots, 0);
    }

    /// <summary>The K distinct indices of the largest <paramref name="scores"/> (flat, any shape), in ascending order.</summary>
    public static Tensor TopK(Tensor scores, long k)
    {
        using var scope = NewDisposeScope();
        var (_, idx) = scores.flatten().topk((int)k, largest: true, sorted: false);
        return idx.sort().Values.MoveToOuterDisposeScope();
    }
}
