using static TorchSharp.torch;

namespace PeftSharp.Tuners.MixLora;

/// <summary>
/// The Switch-Transformer load-balancing loss as MixLoRA computes it over the router logits of every layer, concatenated
/// ([N, E], N = layers × tokens): p = softmax(logits); f[j, e] = share of tokens whose j-th pick is e; P_e = mean of p_e;
/// loss = E · Σ_j Σ_e f[j, e] P_e. It is smallest (= k) when the picks and the probabilities are spread evenly.
/// </summary>
public static class LoadBalancing
{
    public static Tensor Loss(Tensor routerLogits, int topK)
    {
        using var scope = NewDisposeScope();
        long experts = routerLogits.shape[1];
        var probs = nn.functional.softmax(routerLogits.to(ScalarType.Float32), -1);           // [N, E]
        var picks = probs.topk(topK, -1).indexes;                                              // [N, k]
        var perPick = nn.functional.one_hot(picks, experts).to(ScalarType.Float32).mean([0]); // [k, E]
        var meanProb = probs.mean([0]);                                                        // [E]
        return ((perPick * meanProb.unsqueeze(0)).sum() * experts).MoveToOuterDisposeScope();
    }

    /// <summary>Share of all picks (tokens × k) that went to each expert: [E], summing to 1.</summary>
    public static Tensor Usage(Tensor routerLogits, int topK)
    {
        using var scope = NewDisposeScope();
        long experts = routerLogits.shape[1];
        var picks = routerLogits.topk(topK, -1).indexes.flatten();
        return bincount(picks, minlength: experts).to(ScalarType.Float32).div(picks.shape[0]).MoveToOuterDisposeScope();
    }
}
