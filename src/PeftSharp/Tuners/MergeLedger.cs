using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace PeftSharp.Tuners;

/// <summary>
/// What merging changed in a base layer's weight and bias, per merged adapter, so that unmerging restores them
/// exactly. PEFT recomputes the delta and subtracts it (or divides, for IA3, or inverts, for MiSS's bat); keeping
/// the applied difference is exact whatever the method, even when the adapter trained on since.
/// </summary>
internal sealed class MergeLedger
{
    readonly List<(string Adapter, Tensor Weight, Tensor? Bias)> entries = new();

    public IReadOnlyList<string> Adapters => entries.Select(e => e.Adapter).ToList();
    public bool Any => entries.Count > 0;
    public bool Contains(string adapter) => entries.Any(e => e.Adapter == adapter);

    /// <summary>
    /// Merges additive deltas: for each adapter not merged yet, W becomes W + <paramref name="delta"/>(adapter)
    /// (given in the weight's storage layout), in order.
    /// </summary>
    public void MergeDeltasInPlace(Module baseLayer, IEnumerable<string> adapters, Func<string, Tensor> delta, bool safe)
    {
        foreach (var a in adapters)
        {
            if (Contains(a)) continue;
            using var scope = NewDisposeScope();
            using var _ = no_grad();
            ApplyInPlace(baseLayer, a, BaseLayers.Weight(baseLayer).to(ScalarType.Float32) + delta(a), null, safe);
        }
    }

    /// <summary>
    /// Replaces the base layer's weight (and bias, if <paramref name="newBias"/> is given) with merged values, in place.
    /// <paramref name="newWeight"/> is in the weight's storage layout.
    /// </summary>
    public void ApplyInPlace(Module baseLayer, string adapter, Tensor newWeight, Tensor? newBias, bool safe)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        if (safe && !(isfinite(newWeight).all().item<bool>() && (newBias is null || isfinite(newBias).all().item<bool>())))
            throw new InvalidOperationException($"merging adapter '{adapter}' would put NaN or inf into the base weight; it was not merged");
        var weight = BaseLayers.Weight(baseLayer);
        var stored = newWeight.to(weight.dtype);
        var dw = (stored.to(ScalarType.Float32) - weight.to(ScalarType.Float32)).DetachFromDisposeScope();
        weight.copy_(stored);
        Tensor? db = null;
        if (newBias is not null && BaseLayers.Bias(baseLayer) is { } bias)
        {
            var storedBias = newBias.to(bias.dtype);
            db = (storedBias.to(ScalarType.Float32) - bias.to(ScalarType.Float32)).DetachFromDisposeScope();
            bias.copy_(storedBias);
        }
        entries.Add((adapter, dw, db));
    }

    /// <summary>Subtracts every recorded change, newest first, in place.</summary>
    public void UndoAllInPlace(Module baseLayer)
    {
        using var _ = no_grad();
        var weight = BaseLayers.Weight(baseLayer);
        var bias = BaseLayers.Bias(baseLayer);
        for (int i = entries.Count - 1; i >= 0; i--)
        {
            var (_, dw, db) = entries[i];
            using (var w = weight.to(ScalarType.Float32) - dw) weight.copy_(w.to(weight.dtype));
            if (db is not null && bias is not null)
                using (var b = bias.to(ScalarType.Float32) - db) bias.copy_(b.to(bias.dtype));
            dw.Dispose();
            db?.Dispose();
        }
        entries.Clear();
    }
}
