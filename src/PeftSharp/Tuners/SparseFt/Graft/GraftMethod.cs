using static TorchSharp.torch;

namespace PeftSharp.Tuners.SparseFt.Graft;

/// <summary>
/// The <c>method</c> of adapters made by <see cref="Grafting.Learn"/>: their support is learned from a fine-tuned
/// model, so a fresh one cannot be made from a config alone (loading a saved one needs no support).
/// </summary>
internal sealed class GraftMethod : ISparseMethod
{
    public string Name => "graft";

    public Tensor InitialSupport(SparseTarget target, SparseFtConfig config) =>
        throw new ArgumentException("a graft is learned from a fine-tuned model with Grafting.Learn (C#; no CLI verb yet), not made by train --method graft");
}
