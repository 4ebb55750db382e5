using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Generation;

/// <summary>The next-token score transforms of transformers' generate(), in the order it applies them.</summary>
internal static class LogitsProcessors
{
    /// <summary>Scores [B, V] of tokens present in <paramref name="sequences"/> [B, S]: divided by p if positive, times p if negative.</summary>
    public static Tensor RepetitionPenalty(Tensor scores, Tensor sequences, double penalty)
    {
        using var scope = NewDisposeScope();
        var picked = scores.gather(1, sequences);
        picked = where(picked < 0, picked * penalty, picked / penalty);
        return scores.scatter(1, sequences, picked).MoveToOuterDisposeScope();
    }

    public static Tensor TopK(Tensor scores, int k)
    {
        using var scope = NewDisposeScope();
        k = (int)Math.Min(k, scores.shape[^1]);
        var kth = scores.topk(k).values[.., ^1..];
        return scores.masked_fill(scores < kth, double.NegativeInfinity).MoveToOuterDisposeScope();
    }

    /// <summary>Nucleus sampling (Holtzman et al., 2020): keep the smallest set of tokens whose probability reaches p.</summary>
    public static Tensor TopP(Tensor scores, double p)
    {
        using var scope = NewDisposeScope();
        var (sorted, indices) = scores.sort(descending: false);
        var cumulative = sorted.softmax(-1).cumsum(-1);
        var remove = cumulative <= (1 - p);
        remove[.., ^1] = false; // always keep the most likely token
        var mask = remove.scatter(1, indices, remove);
        return scores.masked_fill(mask, double.NegativeInfinity).MoveToOuterDisposeScope();
    }
}
