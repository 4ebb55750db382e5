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
    Generator? Generator = null, double Epsilon = 0.15);

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
        var weights = inputs.Select(i => i.Weight).ToList();
        using var scope = NewDisposeScope();
        // Memory matters here (a few tensors per model, not more): temporaries are freed as soon as they are used.
        var mixed = method.Consensus ? Consensus(method, inputs, weights, options) : WeightedSum(method, inputs, weights, options.Rescale);
        double total = weights.Sum();
        if (!method.Consensus && options.Normalize && Math.Abs(total) >= 1e-8) mixed.div_(total);
        return mixed.MoveToOuterDisposeScope();
    }

    // sum_i w_i * sparsify(tau_i), one task vector at a time.
    static Tensor WeightedSum(MergeMethod method, IReadOnlyList<TaskVectorInput> inputs, IReadOnlyList<double> weights, bool rescale)
    {
        Tensor? sum = null;
        for (int i = 0; i < inputs.Count; i++)
        {
            using var scope = NewDisposeScope();
            var term = method.Sparsify == Sparsification.None
                ? inputs[i].TaskVector * weights[i]
                : Sparsify(method.Sparsify, inputs[i], rescale).mul_(weights[i]);
            if (sum is null) sum = term.MoveToOuterDisposeScope();
            else sum.add_(term);
        }
        return sum!;
    }

    static Tensor Consensus(MergeMethod method, IReadOnlyList<TaskVectorInput> inputs, IReadOnlyList<double> weights, TaskVectorOptions options)
    {
        var first = inputs[0].TaskVector;
        var stacked = empty([inputs.Count, .. first.shape], first.dtype);          // [n, ...]
        for (int i = 0; i < inputs.Count; i++)
        {
            using var scope = NewDisposeScope();
            stacked[i].copy_(Sparsify(method.Sparsify, inputs[i], options.Rescale));
        }
        using var w = MergeMath.RowWeights(stacked, weights);
        if (options.Convention == TiesConvention.Peft)
        {
            // PEFT elects on the unweighted vectors, then averages the agreeing weighted values by count.
            using var agreeUnweighted = MergeMath.SignAgreement(stacked, MergeMath.ElectSign(stacked, options.SignMethod));
            return MergeMath.DisjointMerge(stacked.mul_(w), agreeUnweighted);
        }
        stacked.mul_(w);                                                           // weighted, in place
        // One task vector at a time, so that the sign and mask temporaries are one tensor's size rather than n.
        Tensor? divisor = null;
        using (var elected = MergeMath.ElectSign(stacked, options.SignMethod))
            for (int i = 0; i < inputs.Count; i++)
            {
                using var scope = NewDisposeScope();
                var row = stacked[i];
                var mask = row.sign().eq_(elected);                                // 1 where it agrees, else 0
                row.mul_(mask);
                if (!options.Normalize) continue;
                // mergekit divides by the sum of the weights that agree (1 where none does).
                if (divisor is null) divisor = mask.mul_(weights[i]).MoveToOuterDisposeScope();
                else divisor.add_(mask, alpha: weights[i]);
            }
        var mixed = stacked.sum(dim: 0);
        stacked.Dispose();
        if (divisor is null) return mixed;
        using (divisor) using (var none = divisor.eq(0)) return mixed.div_(divisor.masked_fill_(none, 1));
    }

    static Tensor Sparsify(Sparsification how, TaskVectorInput input, bool rescale)
    {
        var tv = input.TaskVector;
        return how switch
        {
            Sparsification.None => tv.clone(),
            Sparsification.Random => MergeMath.RandomPrune(tv, input.Density, rescale, input.Generator),
            Sparsification.Magnitude => RescaledIf(rescale, tv, MergeMath.MagnitudePrune(tv, input.Density)),
            Sparsification.Breadcrumbs => RescaledIf(rescale, tv, MergeMath.BreadcrumbsPrune(tv, input.Density, input.Gamma)),
            Sparsification.Della => RescaledIf(rescale, tv, MergeMath.DellaPrune(tv, input.Density, input.Epsilon, input.Generator)),
            _ => throw new ArgumentOutOfRangeException(nameof(how), how, null),
        };
    }

    // In place: the pruned tensor is ours, and a copy would be one more whole tensor per model.
    static Tensor RescaledIf(bool rescale, Tensor original, Tensor pruned)
    {
        if (!rescale) return pruned;
        double b = MergeMath.AbsSum(original), a = MergeMath.AbsSum(pruned);
        return b >= 1e-8 && a >= 1e-8 ? pruned.mul_(b / a) : pruned;
    }
}
