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
        throw new ArgumentException("a graft is learned from a fine-tuned model: peftsharp graft --model BASE --tuned DIR --data FILE --out DIR (C#: Grafting.Learn), not made by train --method graft");
}
