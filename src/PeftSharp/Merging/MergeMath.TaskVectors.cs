using static TorchSharp.torch;

namespace PeftSharp.Merging;

// PEFT's merge functions (peft.utils.merge_utils), which add_weighted_adapter uses: each takes the task vectors of
// one parameter and their weights and returns the merged task vector. Note PEFT's TIES convention: the sign is
// elected on the pruned *unweighted* task vectors and agreeing weighted values are divided by their *count*.
// mergekit's convention (elect on weighted values, divide by the sum of agreeing weights) is in TaskVectorMerge.
public static partial class MergeMath
{
    /// <summary>Task arithmetic (https://arxiv.org/abs/2212.04089): <c>sum_i w_i * tau_i</c>.</summary>
    public static Tensor TaskArithmetic(IReadOnlyList<Tensor> taskVectors, IReadOnlyList<double> weights)
    {
        using var scope = NewDisposeScope();
        using var stacked = stack(taskVectors);
        return Weighted(stacked, weights).sum(dim: 0).MoveToOuterDisposeScope();
    }

    /// <summary>Each task vector magnitude-pruned to <paramref name="density"/>, then a weighted sum.</summary>
    public static Tensor MagnitudePruneMerge(IReadOnlyList<Tensor> taskVectors, IReadOnlyList<double> weights, double density)
    {
        using var scope = NewDisposeScope();
        var pruned = taskVectors.Select(t => MagnitudePrune(t, density)).ToList();
        return Weighted(stack(pruned), weights).sum(dim: 0).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// TIES (https://arxiv.org/abs/2306.01708) as PEFT computes it: trim each task vector to its top
    /// <paramref name="density"/> magnitudes, elect a sign per parameter on the unweighted trimmed vectors, then
    /// average the agreeing weighted values by count.
    /// </summary>
    public static Tensor Ties(IReadOnlyList<Tensor> taskVectors, IReadOnlyList<double> weights, double density,
        SignMethod method = SignMethod.Total)
    {
        using var scope = NewDisposeScope();
        var stacked = stack(taskVectors.Select(t => MagnitudePrune(t, density)).ToList());
        return ElectAndMerge(stacked, weights, method).MoveToOuterDisposeScope();
    }

    /// <summary>DARE linear: random prune with rescale, then a weighted sum.</summary>
    public static Tensor DareLinear(IReadOnlyList<Tensor> taskVectors, IReadOnlyList<double> weights, double density,
        Generator? generator = null)
    {
        using var scope = NewDisposeScope();
        var pruned = taskVectors.Select(t => RandomPrune(t, density, rescale: true, generator)).ToList();
        return Weighted(stack(pruned), weights).sum(dim: 0).MoveToOuterDisposeScope();
    }

    /// <summary>DARE TIES: random prune with rescale, then PEFT's sign election and disjoint merge.</summary>
    public static Tensor DareTies(IReadOnlyList<Tensor> taskVectors, IReadOnlyList<double> weights, double density,
        SignMethod method = SignMethod.Total, Generator? generator = null)
    {
        using var scope = NewDisposeScope();
        var stacked = stack(taskVectors.Select(t => RandomPrune(t, density, rescale: true, generator)).ToList());
        return ElectAndMerge(stacked, weights, method).MoveToOuterDisposeScope();
    }

    static Tensor ElectAndMerge(Tensor stacked, IReadOnlyList<double> weights, SignMethod method)
    {
        var agree = SignAgreement(stacked, ElectSign(stacked, method));
        return DisjointMerge(Weighted(stacked, weights), agree);
    }
}
