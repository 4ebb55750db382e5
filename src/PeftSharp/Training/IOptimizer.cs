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

    /// <summary>State per parameter name, in one safetensors file (the same layout whatever the implementation).</summary>
    void Save(string path);
    void Load(string path);
}
