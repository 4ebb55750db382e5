using PeftSharp.Merging;
using PeftSharp.Peft;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Lora;

/// <summary>
/// PEFT's <c>add_weighted_adapter</c>: a new LoRA adapter combining existing ones. "linear", "ties", "dare_*" and
/// "magnitude_prune" combine A and B separately with weights sqrt(w * scaling) (so products carry cross terms, as in
/// PEFT); "cat" stacks the ranks; "*svd" combine the full deltas and re-factor them by truncated SVD.
/// The new adapter has lora_alpha = r, so its scaling is 1 (alpha/sqrt(r) under rsLoRA, as PEFT leaves it).
/// </summary>
public static class WeightedAdapters
{
    static readonly string[] SplitTypes = ["linear", "ties", "dare_linear", "dare_ties", "magnitude_prune"];
    static readonly string[] SvdTypes = ["svd", "ties_svd", "dare_linear_svd", "dare_ties_svd", "magnitude_prune_svd"];

    public static void AddWeightedAdapter(this PeftModel model, IReadOnlyList<string> adapters, IReadOnlyList<double> weights, string name,
        string combinationType = "svd", int? svdRank = null, double density = 1.0, string majoritySignMethod = "total", long? seed = null)
    {
        if (adapters.Count == 0 || adapters.Count != weights.Count)
            throw new ArgumentException($"{adapters.Count} adapters and {weights.Count} weights: give one weight per adapter");
        if (!SplitTypes.Contains(combinationType) && !SvdTypes.Contains(combinationType) && combinationType != "cat")
            throw new ArgumentException($"combination type '{combinationType}' is not one of {string.Join(", ", SplitTypes.Concat(SvdTypes).Append("cat"))}");
        var configs = adapters.Select(a => model.Configs.TryGetValue(a, out var c) ? c as LoraConfig
            ?? throw new ArgumentException($"adapter '{a}' is {c.PeftType}, not LoRA") : throw new KeyNotFoundException($"no adapter named '{a}'")).ToList();
        var sign = majoritySignMethod switch
        {
            "total" => SignMethod.Total,
            "frequency" => SignMethod.Frequency,
            _ => throw new ArgumentException($"majority_sign_method '{majoritySignMethod}' must be total or frequency"),
        };
        var ranks = model.TunerLayers().Select(x => x.Layer).OfType<LoraLayer>()
            .SelectMany(l => adapters.Where(l.Book.Names.Contains).Select(l.Rank)).Distinct().ToList();
        int newRank;
        if (SplitTypes.Contains(combinationType))
        {
            if (ranks.Count > 1) throw new ArgumentException($"combination '{combinationType}' needs adapters of one rank; got ranks {string.Join(", ", ranks)} (use cat or svd)");
            newRank = ranks[0];
        }
        else if (combinationType == "cat") newRank = configs.Sum(c => c.R);
        else newRank = svdRank ?? ranks.Max();

        var targets = model.TunerLayers().Where(x => x.Layer is LoraLayer l && adapters.Any(l.Book.Names.Contains)).Select(x => x.Path).ToArray();
        var config = configs[0] with { R = newRank, LoraAlpha = newRank, TargetModules = targets, RankPattern = new(), AlphaPattern = new(), InitLoraWeights = "true" };
        model.AddAdapter(name, config);
        var generator = seed is { } s ? new torch.Generator((ulong)s) : null;
        using var _ = no_grad();
        foreach (var (path, layer) in model.TunerLayers())
        {
            if (layer is not LoraLayer l || !l.Book.Names.Contains(name)) continue;
            using var scope = NewDisposeScope();
            var present = adapters.Select((a, i) => (a, w: weights[i])).Where(x => l.Book.Names.Contains(x.a)).ToList();
            Tensor a, b;
            if (combinationType == "cat")
            {
                a = cat(present.Select(x => l.A(x.a) * (x.w * l.Scaling(x.a))).ToArray(), 0);
                b = cat(present.Select(x => (Tensor)l.B(x.a)).ToArray(), 1);
                if (a.shape[0] < newRank) // adapters missing on this layer: pad with zero rank
                {
                    a = cat([a, zeros(newRank - a.shape[0], a.shape[1])], 0);
                    b = cat([b, zeros(b.shape[0], newRank - b.shape[1])], 1);
                }
            }
            else if (SplitTypes.Contains(combinationType))
            {
                var w = present.Select(x => Math.Sqrt(x.w * l.Scaling(x.a))).ToList();
                a = Combine(combinationType, present.Select(x => (Tensor)l.A(x.a)).ToList(), w, density, sign, generator);
                b = Combine(combinationType, present.Select(x => (Tensor)l.B(x.a)).ToList(), w, density, sign, generator);
            }
            else
            {
                var deltas = present.Select(x => l.LoraProduct(x.a) * l.Scaling(x.a)).ToList();
                var baseType = combinationType == "svd" ? "linear" : combinationType[..^"_svd".Length];
                var delta = Combine(baseType, deltas, present.Select(x => x.w).ToList(), density, sign, generator);
                (a, b) = Factor(delta, newRank);
                if (a.shape[0] < newRank) // the delta has fewer singular values than the rank asked for
                {
                    a = cat([a, zeros(newRank - a.shape[0], a.shape[1])], 0);
                    b = cat([b, zeros(b.shape[0], newRank - b.shape[1])], 1);
                }
            }
            l.A(name).copy_(a);
            l.B(name).copy_(b);
        }
    }

    static Tensor Combine(string type, IReadOnlyList<Tensor> ts, IReadOnlyList<double> w, double density, SignMethod sign, Generator? g) => type switch
    {
        "linear" => MergeMath.TaskArithmetic(ts, w),
        "ties" => MergeMath.Ties(ts, w, density, sign),
        "dare_linear" => MergeMath.DareLinear(ts, w, density, g),
        "dare_ties" => MergeMath.DareTies(ts, w, density, sign, g),
        "magnitude_prune" => MergeMath.MagnitudePruneMerge(ts, w, density),
        _ => throw new ArgumentException($"unknown combination '{type}'"),
    };

    // Truncated SVD: delta ~ U S Vh, B = U S [out, r], A = Vh [r, in].
    static (Tensor A, Tensor B) Factor(Tensor delta, int rank)
    {
        var (u, s, vh) = linalg.svd(delta.to(ScalarType.Float32), fullMatrices: false);
        rank = (int)Math.Min(rank, s.shape[0]);
        var b = u[.., ..rank].matmul(diag(s[..rank]));
        var a = vh[..rank];
        return (a, b);
    }
}
