using static TorchSharp.torch;

namespace PeftSharp.Generation.Composition;

/// <summary>How the fusion weights are searched at each position.</summary>
public enum FusionSearch
{
    /// <summary>
    /// One expert at a time: the candidates are <c>a e_t</c> for each expert t and grid value a, so one expert steers
    /// each step (the paper's accelerated multi-task search, "perform alpha search only for one task, T times").
    /// </summary>
    OneExpert,

    /// <summary>Every combination of grid values, one per expert (grid size to the power of the expert count).</summary>
    Joint,
}

/// <summary>The grid of fusion weights searched per position: Min, Min + Step, ..., up to Max (the paper: 0 to 2 by 0.1).</summary>
public sealed record FusionGrid(double Min = 0, double Max = 2, double Step = 0.1, FusionSearch Search = FusionSearch.OneExpert)
{
    /// <summary>Most candidates a joint search may try per position.</summary>
    public const int MaxCandidates = 100_000;

    /// <summary>What is wrong with this grid, or null when it can be searched.</summary>
    public string? Problem()
    {
        if (!double.IsFinite(Min) || !double.IsFinite(Max) || !double.IsFinite(Step) || Step <= 0 || Max < Min)
            return "give a finite MIN <= MAX and a STEP > 0";
        double count = Math.Floor((Max - Min) / Step + 1e-9) + 1;
        return count > 10_000 ? $"{count:0} values; use a coarser step (at most 10000 values)" : null;
    }

    /// <summary>The grid values, each Min + k Step (not accumulated, so 0.3 is 0 + 3 x 0.1).</summary>
    public double[] Values()
    {
        if (Problem() is { } problem) throw new ArgumentException($"fusion grid {Min}:{Max}:{Step}: {problem}");
        int count = (int)Math.Floor((Max - Min) / Step + 1e-9) + 1;
        return Enumerable.Range(0, count).Select(k => Min + k * Step).ToArray();
    }

    /// <summary>The candidate weight vectors in search order; the first one with the least objective wins.</summary>
    public List<double[]> Candidates(int experts)
    {
        if (experts < 1) throw new ArgumentException("dynamic logit fusion needs at least one expert");
        var values = Values();
        if (Search == FusionSearch.OneExpert || experts == 1)
            return [.. Enumerable.Range(0, experts).SelectMany(t => values.Select(a => OneHot(experts, t, a)))];
        double total = Math.Pow(values.Length, experts);
        if (total > MaxCandidates)
            throw new ArgumentException($"a joint search over {experts} experts and {values.Length} grid values tries {total:0} weightings per token (at most {MaxCandidates}); use the one-expert search or a coarser grid");
        var all = new List<double[]> { Array.Empty<double>() };
        for (int t = 0; t < experts; t++) all = [.. all.SelectMany(prefix => values.Select(a => (double[])[.. prefix, a]))];
        return all;
    }

    static double[] OneHot(int n, int t, double a)
    {
        var v = new double[n];
        v[t] = a;
        return v;
    }
}

/// <summary>
/// The fusion weights of dynamic logit fusion (Fan et al., "On Giant's Shoulders: Effortless Weak to Strong by Dynamic
/// Logits Fusion", NeurIPS 2024, https://arxiv.org/abs/2406.15480), solved per position. With P the large model's
/// distribution, Q the small base's, Q_t expert t's and <c>P~ = softmax(M_L + sum_t a_t (M_t - M_S))</c>, the weights
/// minimise the paper's objective (its Eq. 3, and Algorithm 1 for several experts)
/// <c>sum_t (KL(P~||P) - KL(Q_t||Q))^2 + (KL(P||P~) - KL(Q||Q_t))^2</c>
/// over a grid: the large model is moved away from its own distribution as far, in both KL directions, as fine-tuning
/// moved the small one. Computed in float64, in chunks of positions so a long prompt does not hold many [N, V] copies.
/// </summary>
public static class FusionWeights
{
    /// <summary>
    /// The weights [.., E] (float64) that minimise the objective at every position of logits [.., V] of the large model,
    /// the small base and each expert, and the objective they reach [..].
    /// </summary>
    public static (Tensor Weights, Tensor Objective) Solve(Tensor large, Tensor smallBase, IReadOnlyList<Tensor> experts, FusionGrid grid)
    {
        var candidates = grid.Candidates(experts.Count);
        foreach (var (t, i) in experts.Select((t, i) => (t, i)).Prepend((smallBase, -1)))
            if (!t.shape.SequenceEqual(large.shape))
                throw new ArgumentException($"{(i < 0 ? "the small base" : $"expert {i}")} gives logits [{string.Join(",", t.shape)}] but the large model [{string.Join(",", large.shape)}]: the models must share a vocabulary");
        var lead = large.shape[..^1];
        long vocab = large.shape[^1], rows = large.numel() / Math.Max(vocab, 1);
        var weights = zeros([rows, experts.Count], ScalarType.Float64);
        var objective = zeros([rows], ScalarType.Float64);
        long chunk = Math.Max(1, (1L << 21) / Math.Max(vocab, 1));
        for (long start = 0; start < rows; start += chunk)
        {
            using var scope = NewDisposeScope();
            long n = Math.Min(chunk, rows - start);
            Tensor Rows(Tensor t) => t.reshape(rows, vocab).narrow(0, start, n).to(ScalarType.Float64, CPU);
            var (w, o) = SolveRows(Rows(large), Rows(smallBase), [.. experts.Select(Rows)], candidates);
            weights.narrow(0, start, n).copy_(w);
            objective.narrow(0, start, n).copy_(o);
        }
        return (weights.reshape([.. lead, experts.Count]), objective.reshape(lead));
    }

    /// <summary>The objective at one weighting, per position: what <see cref="Solve"/> minimises (float64 logits [N, V]).</summary>
    public static Tensor Objective(Tensor large, Tensor smallBase, IReadOnlyList<Tensor> experts, IReadOnlyList<double> weights)
    {
        using var scope = NewDisposeScope();
        var (fwd, rev) = Targets(smallBase, experts);
        var logP = large.log_softmax(-1);
        return Loss(logP, logP.exp(), Fused(large, smallBase, experts, weights), fwd, rev).MoveToOuterDisposeScope();
    }

    static (Tensor Weights, Tensor Objective) SolveRows(Tensor large, Tensor smallBase, Tensor[] experts, List<double[]> candidates)
    {
        var (fwd, rev) = Targets(smallBase, experts);
        var logP = large.log_softmax(-1);
        var p = logP.exp();
        var deltas = experts.Select(e => e - smallBase).ToArray();
        long n = large.shape[0];
        var best = full([n], double.PositiveInfinity, ScalarType.Float64);
        var chosen = zeros([n, experts.Length], ScalarType.Float64);
        foreach (var a in candidates)
        {
            using var scope = NewDisposeScope();
            var z = large.clone();
            for (int t = 0; t < a.Length; t++)
                if (a[t] != 0) z.add_(deltas[t], alpha: a[t]);
            var loss = Loss(logP, p, z, fwd, rev);
            var better = loss.lt(best);   // strict: the first candidate in search order keeps a tie
            best.copy_(where(better, loss, best));
            chosen.copy_(where(better.unsqueeze(1), tensor(a, ScalarType.Float64).unsqueeze(0), chosen));
        }
        return (chosen, best);
    }

    // KL(Q_t||Q) and KL(Q||Q_t) per expert, [E, N]: how far fine-tuning moved the small model, in both directions.
    static (Tensor Forward, Tensor Reverse) Targets(Tensor smallBase, IReadOnlyList<Tensor> experts)
    {
        var logQ = smallBase.log_softmax(-1);
        var q = logQ.exp();
        var fwd = stack(experts.Select(e => { var lq = e.log_softmax(-1); return (lq.exp() * (lq - logQ)).sum(-1); }).ToArray());
        var rev = stack(experts.Select(e => (q * (logQ - e.log_softmax(-1))).sum(-1)).ToArray());
        return (fwd, rev);
    }

    static Tensor Fused(Tensor large, Tensor smallBase, IReadOnlyList<Tensor> experts, IReadOnlyList<double> weights)
    {
        var z = large.clone();
        for (int t = 0; t < experts.Count; t++) z.add_(experts[t] - smallBase, alpha: weights[t]);
        return z;
    }

    // sum_t (KL(P~||P) - KL(Q_t||Q))^2 + (KL(P||P~) - KL(Q||Q_t))^2 for the fused logits z.
    static Tensor Loss(Tensor logP, Tensor p, Tensor z, Tensor fwd, Tensor rev)
    {
        var logFused = z.log_softmax(-1);
        var klFusedLarge = (logFused.exp() * (logFused - logP)).sum(-1);
        var klLargeFused = (p * (logP - logFused)).sum(-1);
        return ((klFusedLarge.unsqueeze(0) - fwd).square() + (klLargeFused.unsqueeze(0) - rev).square()).sum(dim: 0);   // sum(0) would read 0 as ScalarType.Byte
    }
}
