using PeftSharp.Models;
using PeftSharp.Tuners;
using static TorchSharp.torch;

namespace PeftSharp.Peft;

public sealed partial class PeftModel
{
    /// <summary>
    /// Until disposed, row i of every batch runs with adapter <paramref name="rowAdapters"/>[i] alone, or the base
    /// model where it is null: PEFT's per-sample <c>adapter_names</c>, for serving many adapters in one batch. Each
    /// adapter is computed on its own rows only. The batch size must stay the row count, as it does in cached
    /// generation, so <c>using (peft.RowAdapters(names)) TextGenerator.Generate(peft, prompts, options)</c> works.
    /// Refused for adapters that are merged, prompt learning, or of a method whose layers cannot mix rows.
    /// </summary>
    public IDisposable RowAdapters(IReadOnlyList<string?> rowAdapters)
    {
        if (rowAdapters.Count == 0) throw new ArgumentException("per-row adapters: name one adapter (or null for the base model) per row");
        // As PEFT: a batch that mixes adapters is for inference; training one adapter per row is not what this computes.
        if (Base.training) throw new InvalidOperationException("per-row adapters are for inference: call model.eval() first");
        var layers = TunerLayers().Select(x => x.Layer).ToList();
        if (layers.Any(l => l.Book.RowAdapters is not null)) throw new InvalidOperationException("per-row adapters are already set; dispose the first scope before opening another");
        CheckRowAdapters(rowAdapters.OfType<string>().Distinct(), layers);
        var groups = new RowGroups(rowAdapters, Device);
        foreach (var layer in layers) layer.Book.RowAdapters = groups;
        return new Restore(() =>
        {
            foreach (var layer in layers) layer.Book.RowAdapters = null;
            groups.Dispose();
        });
    }

    /// <summary>
    /// Whether <see cref="RowAdapters"/> would accept these rows now (inference mode, no scope open, adapters that mix
    /// rows): composed decoders use it to run several views of one model as one batch, and run them apart otherwise.
    /// </summary>
    public bool CanRunRowAdapters(IReadOnlyList<string?> rowAdapters)
    {
        var layers = TunerLayers().Select(x => x.Layer).ToList();
        if (rowAdapters.Count == 0 || Base.training || layers.Any(l => l.Book.RowAdapters is not null)) return false;
        try { CheckRowAdapters(rowAdapters.OfType<string>().Distinct(), layers); return true; }
        catch (Exception e) when (e is KeyNotFoundException or NotSupportedException or InvalidOperationException) { return false; }
    }

    /// <summary>One forward of a mixed batch: <paramref name="rowAdapters"/> names each row's adapter (null: base).</summary>
    public Tensor Forward(ModelInputs inputs, IReadOnlyList<string?> rowAdapters)
    {
        using var _ = RowAdapters(rowAdapters);
        return Forward(inputs);
    }

    void CheckRowAdapters(IEnumerable<string> used, List<ITunerLayer> layers)
    {
        // As PEFT: merged weights hold the adapter in every row, so no row could run without it.
        if (layers.SelectMany(l => l.MergedAdapters).Distinct().ToList() is [_, ..] merged)
            throw new InvalidOperationException($"adapter '{merged[0]}' is merged into the base weights; unmerge it before running per-row adapters");
        if (ActivePrompt is not null)
            throw new NotSupportedException($"adapter '{active[0]}' is prompt learning ({configs[active[0]].PeftType}): per-row adapters need adapters on layers");
        foreach (var name in used)
        {
            if (!configs.TryGetValue(name, out var config))
                throw new KeyNotFoundException($"per-row adapters: no adapter named '{name}'; adapters: {string.Join(", ", configs.Keys)}");
            if (config.IsPromptLearning)
                throw new NotSupportedException($"adapter '{name}' is prompt learning ({config.PeftType}): per-row adapters need adapters on layers");
            if (layers.Any(l => l.AdapterNames.Contains(name) && !l.MixesRows))
                throw new NotSupportedException($"adapter '{name}' is {config.PeftType}: per-row adapters are supported for LoRA only; run its rows as a separate batch");
            if (SavedModules().Any(x => x.Wrapper.AdapterNames.Contains(name)))
                throw new NotSupportedException($"adapter '{name}' has modules_to_save, which per-row adapters do not support yet; run its rows as a separate batch");
        }
    }
}
