using static TorchSharp.torch;

namespace PeftSharp.Tuners.SparseFt.Masks;

/// <summary>
/// A fixed mask of the K largest-magnitude entries of the pretrained weight: idx = topK(|W|), δW = scatter(idx, v).
/// The magnitude baseline of the sparse fine-tuning literature (e.g. the "Arbitrary Few Parameters are Good Enough"
/// comparison, Su et al. 2023, https://arxiv.org/abs/2306.02320).
/// </summary>
internal sealed class MagnitudeMethod : ISparseMethod
{
    public string Name => "magnitude";

    public Tensor InitialSupport(SparseTarget target, SparseFtConfig config)
    {
        using var scope = NewDisposeScope();
        return SparseWeightDelta.TopK(target.Weight.detach().to(ScalarType.Float32).abs(), target.Budget).MoveToOuterDisposeScope();
    }
}
