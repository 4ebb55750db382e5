using PeftSharp.Peft;
using PeftSharp.Tuners.SparseFt.Shira;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.SparseFt;

/// <summary>
/// Composition of sparse deltas by addition (Ansell et al. 2021, "Composable Sparse Fine-Tuning for Cross-Lingual
/// Transfer", https://arxiv.org/abs/2110.07560): θ = θ₀ + Σ_i w_i δ_i, e.g. a task delta and a language delta. With
/// every adapter active the layers sum their deltas; merging then writes that sum.
/// </summary>
public static class SparseComposition
{
    public static bool IsSparse(PeftConfig c) => c is SparseFtConfig or ShiraConfig;

    /// <summary>
    /// Scales each adapter's values by its weight, in place, and makes them all active: the model computes
    /// θ₀ + Σ w_i δ_i. Every adapter must be a sparse delta.
    /// </summary>
    public static void ComposeInPlace(PeftModel model, IReadOnlyList<string> adapters, IReadOnlyList<double> weights)
    {
        if (adapters.Count != weights.Count) throw new ArgumentException($"{weights.Count} weight(s) for {adapters.Count} adapter(s): give one weight per adapter");
        foreach (var a in adapters)
            if (!IsSparse(model.Configs[a]))
                throw new ArgumentException($"adapter '{a}' is {model.Configs[a].PeftType}, not a sparse delta: only sparse deltas compose by addition");
        using (no_grad())
            for (int i = 0; i < adapters.Count; i++)
                if (weights[i] != 1.0)
                    foreach (var (_, layer) in model.TunerLayers())
                        if (layer is SparseFtLayer s && layer.AdapterNames.Contains(adapters[i])) s.Delta(adapters[i]).Values.mul_(weights[i]);
        model.SetAdapter([.. adapters]);
    }
}
