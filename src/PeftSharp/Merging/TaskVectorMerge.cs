using static TorchSharp.torch;

namespace PeftSharp.Merging;

/// <summary>Which TIES convention the sign election and the disjoint mean follow.</summary>
public enum TiesConvention
{
    /// <summary>
    /// mergekit's: the sign is elected on the *weighted* task vectors, and with <c>normalize</c> the agreeing values
    /// are divided by the *sum of their weights*.
    /// </summary>
    Mergekit,
    /// <summary>PEFT's <c>merge_utils</c>: elected on the *unweighted* (pruned) vectors, divided by their *count*.</summary>
    Peft,
}

/// <summary>The task vector of one model for one tensor, with that model's parameters for the tensor.</summary>
public sealed record TaskVectorInput(Tensor TaskVector, double Weight, double Density = 1, double Gamma = 0.01,
    Generator? Generator = null);

/// <summary>Method-wide options; defaults per method come from <see cref="MergeMethod"/>.</summary>
public sealed record TaskVectorOptions(bool Normalize, bool Rescale, SignMethod SignMethod = SignMethod.Total,
    TiesConvention Convention = TiesConvention.Mergekit);

/// <summary>
/// mergekit's generalized task arithmetic for one tensor: sparsify each task vector, weight it, optionally keep only
/// the values that agree with an elected sign, and sum (normalised by the weights when asked). Returns the merged
/// task vector; the caller adds it to the base.
/// </summary>
public static class TaskVectorMerge
{
    public static Tensor Mix(MergeMethod method, IReadOnlyList<TaskVectorInput> inputs, TaskVectorOptions options)
    {
        if (method.Kind != MergeKind.TaskVectors) throw new ArgumentException($"{method.Name} does not merge task vectors", nameof(method));
        if (inputs.Count == 0) throw new ArgumentException("no task vectors to merge", nameof(inputs));
        using var scope = NewDisposeScope();
        var stacked = stack(inputs.Select(i => Sparsify(method.Sparsify, i, options.Rescale)).ToList());
        var weights = inputs.Select(i => i.Weight).ToList();
        var weighted = MergeMath.Weighted(stacked, weights);
        Tensor mixed;
        if (method.Consensus && options.Convention == TiesConvention.Peft)
        {
            mixed = MergeMath.DisjointMerge(weighted, MergeMath.SignAgreement(stacked, MergeMath.ElectSign(stacked, options.SignMethod)));
        }
        else if (method.Consensus)
        {
            var agree = MergeMath.SignAgreement(weighted, MergeMath.ElectSign(weighted, options.SignMethod)).to(stacked.dtype);
            mixed = (weighted * agree).sum(dim: 0);
            if (options.Normalize)
            {
                var divisor = MergeMath.Weighted(agree, weights).sum(dim: 0);
                mixed = mixed / divisor.masked_fill(divisor.eq(0), 1);
            }
        }
        else
        {
            mixed = weighted.sum(dim: 0);
            double total = weights.Sum();
            if (options.Normalize && Math.Abs(total) >= 1e-8) mixed = mixed / total;
        }
        return mixed.MoveToOuterDisposeScope();
    }

    static Tensor Sparsify(Sparsification how, TaskVectorInput input, bool rescale)
    {
        var tv = input.TaskVector;
        return how switch
        {
            Sparsification.None => tv.alias(),
            Sparsification.Random => MergeMath.RandomPrune(tv, input.Density, rescale, input.Generator),
            Sparsification.Magnitude => RescaledIf(rescale, tv, MergeMath.MagnitudePrune(tv, input.Density)),
            Sparsification.Breadcrumbs => RescaledIf(rescale, tv, MergeMath.BreadcrumbsPrune(tv, input.Density, input.Gamma)),
            _ => throw new ArgumentOutOfRangeException(nameof(how), how, null),
        };
    }

    static Tensor RescaledIf(bool rescale, Tensor original, Tensor pruned) => rescale ? MergeMath.RescaleL1(original, pruned) : pruned;
}
