using static TorchSharp.torch;

namespace PeftSharp.Tuners.SparseFt.Spiel;

/// <summary>
/// One weight's growth candidates over an accumulation window, as the authors' gradient hook keeps them: the first
/// gradient of the window picks the K entries with the largest |∂L/∂W| (K = the delta's size), and every gradient of
/// the window adds to their sums and sums of squares. Only these K entries can grow at the window's end.
/// </summary>
internal sealed class GrowthCandidates : IDisposable
{
    /// <summary>[K] int64 flat indices into the weight.</summary>
    public Tensor Indices { get; }
    /// <summary>[K] Σ g and Σ g² over the window's gradients, at <see cref="Indices"/>.</summary>
    public Tensor GradSum { get; }
    public Tensor GradSqSum { get; }
    /// <summary>How many gradients were summed.</summary>
    public long Samples { get; private set; }

    GrowthCandidates(Tensor indices, Tensor gradSum, Tensor gradSqSum, long samples)
    {
        (Indices, GradSum, GradSqSum, Samples) = (indices, gradSum, gradSqSum, samples);
    }

    /// <summary>The candidates picked by a window's first gradient <paramref name="grad"/> (any shape), which is their first sample.</summary>
    public static GrowthCandidates First(Tensor grad, long k)
    {
        using var scope = NewDisposeScope();
        var flat = grad.detach().flatten();
        var indices = flat.abs().topk((int)k, largest: true, sorted: false).indexes;
        var g = flat.index_select(0, indices);
        return new GrowthCandidates(indices.DetachFromDisposeScope(), g.DetachFromDisposeScope(), (g * g).DetachFromDisposeScope(), 1);
    }

    /// <summary>Takes up a gradient of the window.</summary>
    public void Add(Tensor grad)
    {
        using var scope = NewDisposeScope();
        var g = grad.detach().flatten().index_select(0, Indices);
        GradSum.add_(g);
        GradSqSum.addcmul_(g, g, 1);
        Samples++;
    }

    /// <summary>The tensors a checkpoint keeps (new ones), under <paramref name="prefix"/>.</summary>
    public Dictionary<string, Tensor> Save(string prefix) => new()
    {
        [prefix + "candidates"] = Indices.clone(),
        [prefix + "grad_sum"] = GradSum.clone(),
        [prefix + "grad_sq_sum"] = GradSqSum.clone(),
        [prefix + "samples"] = tensor(Samples),
    };

    /// <summary>Candidates saved by <see cref="Save"/>, or null when the checkpoint was taken outside a window.</summary>
    public static GrowthCandidates? Load(IReadOnlyDictionary<string, Tensor> state, string prefix, long k, Device device, string source)
    {
        if (!state.TryGetValue(prefix + "candidates", out var indices)) return null;
        Tensor Get(string key, ScalarType dtype, long[] shape)
        {
            if (!state.TryGetValue(prefix + key, out var t)) throw new InvalidDataException($"{source}: '{prefix}candidates' without '{prefix}{key}'");
            if (t.dtype != dtype || !t.shape.SequenceEqual(shape))
                throw new InvalidDataException($"{source}: '{prefix}{key}' is {t.dtype}{AdapterTensors.Shape(t)}, expected {dtype}[{string.Join(",", shape)}] (another adapter configuration?)");
            return t.to(device, copy: true).DetachFromDisposeScope();
        }
        long samples;
        using (var t = Get("samples", ScalarType.Int64, [])) samples = t.item<long>();
        if (samples < 1) throw new InvalidDataException($"{source}: '{prefix}samples' is {samples}, expected at least 1");
        return new GrowthCandidates(Get("candidates", ScalarType.Int64, [k]), Get("grad_sum", ScalarType.Float32, [k]), Get("grad_sq_sum", ScalarType.Float32, [k]), samples);
    }

    public void Dispose()
    {
        Indices.Dispose();
        GradSum.Dispose();
        GradSqSum.Dispose();
    }
}
