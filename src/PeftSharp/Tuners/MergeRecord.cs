using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Tuners;

/// <summary>
/// What merging wrote into a base layer: the merged adapters, in order, and each changed parameter's value from
/// before the first merge. Unmerging copies those values back, so the base is restored bit for bit whatever the
/// method (PEFT recomputes and subtracts the delta, or divides for IA3, or inverts for MiSS's bat).
/// </summary>
internal sealed class MergeRecord
{
    readonly List<string> adapters = new();
    readonly List<(Parameter Target, Tensor Original)> originals = new();

    public IReadOnlyList<string> Adapters => adapters;
    public bool Any => adapters.Count > 0;
    public bool Contains(string adapter) => adapters.Contains(adapter);

    /// <summary>The parameter's value before any merge (itself if nothing was merged into it).</summary>
    public Tensor Original(Parameter p) => originals.FirstOrDefault(o => o.Target.Handle == p.Handle).Original ?? p;

    /// <summary>
    /// Writes merged values into base parameters for <paramref name="adapter"/>, in place. With <paramref name="safe"/>,
    /// values with NaN or inf are refused before anything is written.
    /// </summary>
    public void Write(string adapter, IReadOnlyList<(Parameter Target, Tensor Value)> values, bool safe)
    {
        using var _ = no_grad();
        if (safe && values.Any(v => !isfinite(v.Value).all().item<bool>()))
            throw new InvalidOperationException($"merging adapter '{adapter}' would put NaN or inf into the base weights; it was not merged");
        foreach (var (target, value) in values)
        {
            if (originals.All(o => o.Target.Handle != target.Handle))
                originals.Add((target, target.detach().clone().DetachFromDisposeScope()));
            using var stored = value.to(target.dtype);
            target.copy_(stored);
        }
        adapters.Add(adapter);
    }

    /// <summary>Puts every changed parameter back as it was before the first merge.</summary>
    public void RestoreAll()
    {
        using var _ = no_grad();
        foreach (var (target, original) in originals) { target.copy_(original); original.Dispose(); }
        originals.Clear();
        adapters.Clear();
    }
}
