using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.SparseFt.Masks;

/// <summary>
/// A fixed random mask: the first K of a random permutation of the weight's entries, drawn from torch's CPU generator
/// seeded with random_seed + the target's ordinal (SHiRA's random mask, Bhardwaj et al. 2024,
/// https://arxiv.org/abs/2406.13175; "arbitrary few parameters are good enough", Su et al. 2023). δW = scatter(idx, v),
/// idx = randperm(numel)[:K], only v trains.
/// </summary>
internal sealed class RandomMaskMethod : ISparseMethod
{
    public string Name => "random-mask";

    public Tensor InitialSupport(SparseTarget target, SparseFtConfig config) =>
        RandomSupport(target.Weight.numel(), target.Budget, config.RandomSeed + target.Ordinal).to(target.Weight.device);

    /// <summary>randperm(numel, generator seeded with <paramref name="seed"/>)[:k], ascending: SHiRA's random_mask on CPU.</summary>
    public static Tensor RandomSupport(long numel, long k, long seed)
    {
        using var scope = NewDisposeScope();
        using var g = new Generator((ulong)seed);
        var perm = randperm(numel, generator: g, dtype: ScalarType.Int64);
        return perm.narrow(0, 0, k).sort().Values.MoveToOuterDisposeScope();
    }
}
