using static TorchSharp.torch;

namespace PeftSharp.Models;

/// <summary>
/// Keys and values of the positions already seen, per layer ([B, kv_heads, S, head_dim]), so that generating
/// a token runs the model over that one token. Prefix tuning pre-fills it with its virtual tokens.
/// Owns its tensors: dispose it when generation ends.
/// </summary>
public sealed class KvCache : IDisposable
{
    readonly Tensor?[] keys;
    readonly Tensor?[] values;

    readonly bool trackGradients;

    // A composed model's cache (logit mixing) holds one cache per member model and no layers of its own.
    readonly KvCache[] members = [];

    /// <param name="trackGradients">Keep the autograd graph through cached tensors (training prefix tuning, whose
    /// virtual keys/values are parameters); by default cached tensors are detached.</param>
    public KvCache(int layers, bool trackGradients = false)
    {
        keys = new Tensor?[layers];
        values = new Tensor?[layers];
        this.trackGradients = trackGradients;
    }

    KvCache(KvCache[] members) : this(0) => this.members = members;

    /// <summary>A cache made of one cache per member of a composed model, in the member order; disposed together.</summary>
    public static KvCache Of(IReadOnlyList<KvCache> members) =>
        members.Count > 0 ? new([.. members]) : throw new ArgumentException("a composed cache needs at least one member cache");

    /// <summary>The member caches of a cache made by <see cref="Of"/>; empty for a model's own cache.</summary>
    public IReadOnlyList<KvCache> Members => members;

    /// <summary>Positions cached so far (a composed cache: its first member's).</summary>
    public long Length => members.Length > 0 ? members[0].Length : keys[0]?.shape[2] ?? 0;

    /// <summary>Appends this step's keys/values for <paramref name="layer"/> and returns all of them.</summary>
    public (Tensor K, Tensor V) Append(int layer, Tensor k, Tensor v)
    {
        var oldK = keys[layer];
        var oldV = values[layer];
        var newK = oldK is null ? Own(k) : cat([oldK, trackGradients ? k : k.detach()], 2);
        var newV = oldV is null ? Own(v) : cat([oldV, trackGradients ? v : v.detach()], 2);
        newK.MoveToOuterDisposeScope();
        newV.MoveToOuterDisposeScope();
        // Our copies live outside any step's dispose scope; the previous ones are ours to free.
        keys[layer] = newK.DetachFromDisposeScope();
        values[layer] = newV.DetachFromDisposeScope();
        oldK?.Dispose();
        oldV?.Dispose();
        return (keys[layer]!, values[layer]!);
    }

    /// <summary>Sets a layer's cache outright (prefix tuning); the cache takes ownership of copies.</summary>
    public void Set(int layer, Tensor k, Tensor v)
    {
        keys[layer]?.Dispose();
        values[layer]?.Dispose();
        keys[layer] = (trackGradients ? k.clone() : k.detach().clone()).DetachFromDisposeScope();
        values[layer] = (trackGradients ? v.clone() : v.detach().clone()).DetachFromDisposeScope();
    }

    // A handle of our own on the step's tensor: detached, or (tracking gradients) a differentiable copy.
    Tensor Own(Tensor t) => trackGradients ? t.clone() : t.detach();

    /// <summary>Keeps only the rows in <paramref name="index"/> (e.g. finished sequences dropped).</summary>
    public void Select(Tensor index)
    {
        foreach (var m in members) m.Select(index);
        for (int i = 0; i < keys.Length; i++)
        {
            if (keys[i] is null) continue;
            var k = keys[i]!.index_select(0, index).DetachFromDisposeScope();
            var v = values[i]!.index_select(0, index).DetachFromDisposeScope();
            keys[i]!.Dispose();
            values[i]!.Dispose();
            keys[i] = k;
            values[i] = v;
        }
    }

    public void Dispose()
    {
        foreach (var t in keys) t?.Dispose();
        foreach (var t in values) t?.Dispose();
        foreach (var m in members) m.Dispose();
    }
}
