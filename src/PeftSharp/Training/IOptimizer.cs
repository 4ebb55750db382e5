using static TorchSharp.torch;

namespace PeftSharp.Training;

/// <summary>What the trainer and its checkpoints need from an optimizer.</summary>
public interface IOptimizer : IDisposable
{
    /// <summary>One update with learning rate <paramref name="lr"/>.</summary>
    void Step(double lr);

    /// <summary>Clears the gradients before the next step's backward passes.</summary>
    void ZeroGrad();

    /// <summary>The gradients to clip and measure: one per parameter, or a few flat buffers holding them all.</summary>
    IReadOnlyList<Tensor> Gradients();

    /// <summary>Frees the state of parameters that stopped training.</summary>
    void DropState(IEnumerable<string> names);

    /// <summary>
    /// The live state tensors of parameter <paramref name="name"/> by key (<c>exp_avg</c>, <c>exp_avg_sq</c>, ...; views
    /// into the flat buffers of a fused optimizer), empty before its first step. Where a method that reshapes a parameter
    /// as it trains (a rank that grows) reads the moments to carry over.
    /// </summary>
    IReadOnlyDictionary<string, Tensor> StateOf(string name) => new Dictionary<string, Tensor>();

    /// <summary>Zeroes the state of some entries of a flat parameter (their weights were replaced by others).</summary>
    void ResetEntries(string name, Tensor entries) =>
        throw new NotSupportedException($"{GetType().Name} cannot reset the state of single entries of '{name}'");

    /// <summary>State per parameter name, in one safetensors file (the same layout whatever the implementation).</summary>
    void Save(string path);
    void Load(string path);
}
