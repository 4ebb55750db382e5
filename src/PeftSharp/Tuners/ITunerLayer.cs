using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;
using TorchSharp.Modules;

namespace PeftSharp.Tuners;

/// <summary>
/// A layer that wraps the base module it adapts (<c>base_layer</c>) and holds one or more named adapters,
/// as PEFT's tuner layers do. State-dict keys are PEFT's, relative to the wrapped module's path.
/// The bookkeeping (names, active set, disabled flag, merge record) is the layer's <see cref="Book"/>; a layer
/// writes its tensors, its forward and, where it has one, its merge.
/// </summary>
public interface ITunerLayer
{
    Module BaseLayer { get; }
    IAdapterBook Book { get; }

    IReadOnlyCollection<string> AdapterNames => Book.Names;
    /// <summary>Adapters whose output is added (several are summed); empty runs the base alone.</summary>
    IReadOnlyList<string> ActiveAdapters { get => Book.Active; set => Book.Active = value; }
    /// <summary>When true the layer computes the base output only (adapters kept, unmerged).</summary>
    bool Disabled { get => Book.Disabled; set => Book.Disabled = value; }
    IReadOnlyList<string> MergedAdapters => Book.Merged;

    /// <summary>The adapter's tensors under PEFT's saved names (adapter name removed), e.g. "lora_A.weight".</summary>
    IEnumerable<(string Key, Tensor Value)> StateDict(string adapter);

    /// <summary>What the layer expects of an adapter, for error messages (e.g. "in=64, out=32, r=4").</summary>
    string Describe(string adapter);

    /// <summary>
    /// Copies saved tensors into the adapter; <paramref name="source"/> names the file for errors. Strict: every
    /// tensor of <see cref="StateDict"/> must be there with its shape, and nothing else.
    /// </summary>
    void LoadStateDict(string adapter, IReadOnlyDictionary<string, Tensor> tensors, string modulePath, string source) =>
        AdapterTensors.CopyInto(StateDict(adapter), tensors, modulePath, adapter, source, Describe(adapter));

    /// <summary>The adapter's trainable parameters.</summary>
    IEnumerable<Parameter> AdapterParameters(string adapter) => StateDict(adapter).Select(kv => (Parameter)kv.Value);

    /// <summary>Removes the adapter (refused while merged).</summary>
    void DeleteAdapter(string adapter)
    {
        Book.Remove(adapter);
        RemoveTensors(adapter);
    }

    /// <summary>Drops the adapter's sub-modules and tensors (the book has already forgotten it).</summary>
    void RemoveTensors(string adapter);

    /// <summary>Whether the forward honours <see cref="IAdapterBook.RowAdapters"/> (one adapter per batch row).</summary>
    bool MixesRows => false;

    bool CanMerge { get; }
    /// <summary>Writes the adapters into the base weights in place.</summary>
    void MergeInPlace(IReadOnlyList<string> adapters, bool safe);
    /// <summary>Restores the base weights as they were before merging.</summary>
    void UnmergeInPlace() => Book.Unmerge();
}

/// <summary>Tuner layers whose effect is a weight delta (LoRA, LoHa, LoKr, ...): merging and task arithmetic use it.</summary>
public interface IDeltaWeightLayer : ITunerLayer
{
    /// <summary>The adapter's delta in the base weight's storage layout (so <c>W + delta</c> is the merged weight).</summary>
    Tensor DeltaWeight(string adapter);

    bool ITunerLayer.CanMerge => true;
    void ITunerLayer.MergeInPlace(IReadOnlyList<string> adapters, bool safe) => Book.MergeDeltas(adapters, DeltaWeight, safe);
}
