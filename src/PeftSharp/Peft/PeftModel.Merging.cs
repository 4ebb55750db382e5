using PeftSharp.Models;
using PeftSharp.Tuners;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace PeftSharp.Peft;

public sealed partial class PeftModel
{
    /// <summary>Adds the adapters' deltas into the base weights in place (default: the active ones).</summary>
    public void MergeAdapter(IReadOnlyList<string>? adapters = null, bool safeMerge = false)
    {
        adapters ??= active;
        foreach (var (path, layer) in TunerLayers())
        {
            if (!layer.CanMerge) throw new NotSupportedException($"{layer.GetType().Name} at '{path}' cannot be merged into the weights");
            layer.MergeInPlace(adapters.Where(layer.AdapterNames.Contains).ToList(), safeMerge);
        }
    }

    /// <summary>Undoes <see cref="MergeAdapter"/>.</summary>
    public void UnmergeAdapter()
    {
        foreach (var (_, layer) in TunerLayers()) layer.UnmergeInPlace();
    }

    /// <summary>
    /// Merges the active adapters and puts the plain layers back: the result is an ordinary model
    /// (modules_to_save copies replace their originals). This PeftModel is unusable afterwards.
    /// </summary>
    public PretrainedModel MergeAndUnload(bool safeMerge = false, IReadOnlyList<string>? adapters = null)
    {
        if (configs.Values.Any(c => c.IsPromptLearning)) throw new NotSupportedException("prompt-learning adapters cannot be merged into the weights");
        MergeAdapter(adapters, safeMerge);
        return Unwrap(keepSavedCopies: true);
    }

    /// <summary>Removes every adapter layer without merging: the base model as it was.</summary>
    public PretrainedModel Unload() => Unwrap(keepSavedCopies: false);

    PretrainedModel Unwrap(bool keepSavedCopies)
    {
        foreach (var (path, layer) in TunerLayers().ToList())
        {
            if (!keepSavedCopies && layer.MergedAdapters.Count > 0) layer.UnmergeInPlace();
            ModuleTree.Replace(Base, path, layer.BaseLayer);
        }
        foreach (var (path, w) in SavedModules().ToList())
        {
            var keep = keepSavedCopies && w.ActiveAdapter is { } a ? w.Copy(a) : w.Original;
            ModuleTree.Replace(Base, path, keep);
        }
        configs.Clear();
        extras.Clear();
        active.Clear();
        foreach (var p in Base.parameters()) p.requires_grad = false;
        return Base;
    }
}
