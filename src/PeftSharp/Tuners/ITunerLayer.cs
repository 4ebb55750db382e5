using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;
using TorchSharp.Modules;

namespace PeftSharp.Tuners;

/// <summary>
/// A layer that wraps the base module it adapts (<c>base_layer</c>) and holds one or more named adapters,
/// as PEFT's tuner layers do. State-dict keys are PEFT's, relative to the wrapped module's path.
/// </summary>
public interface ITunerLayer
{
    Module BaseLayer { get; }
    IReadOnlyCollection<string> AdapterNames { get; }
    /// <summary>Adapters whose output is added (several are summed); empty runs the base alone.</summary>
    IReadOnlyList<string> ActiveAdapters { get; set; }
    /// <summary>When true the layer computes the base output only (adapters kept, unmerged).</summary>
    bool Disabled { get; set; }

    void DeleteAdapter(string adapter);

    /// <summary>The adapter's tensors under PEFT's saved names (adapter name removed), e.g. "lora_A.weight".</summary>
    IEnumerable<(string Key, Tensor Value)> StateDict(string adapter);

    /// <summary>Copies saved tensors into the adapter; <paramref name="source"/> names the file for errors.</summary>
    void LoadStateDict(string adapter, IReadOnlyDictionary<string, Tensor> tensors, string modulePath, string source);

    /// <summary>The adapter's trainable parameters.</summary>
    IEnumerable<Parameter> AdapterParameters(string adapter);

    bool CanMerge { get; }
    IReadOnlyList<string> MergedAdapters { get; }
    /// <summary>Adds the adapters' weight deltas into the base weight in place.</summary>
    void MergeInPlace(IReadOnlyList<string> adapters, bool safe);
    /// <summary>Subtracts what <see cref="MergeInPlace"/> added.</summary>
    void UnmergeInPlace();
}

/// <summary>Tuner layers whose effect is a weight delta (LoRA, LoHa, LoKr, ...): merging and task arithmetic use it.</summary>
public interface IDeltaWeightLayer : ITunerLayer
{
    /// <summary>The adapter's delta in the base weight's storage layout (so <c>W + delta</c> is the merged weight).</summary>
    Tensor DeltaWeight(string adapter);
}
