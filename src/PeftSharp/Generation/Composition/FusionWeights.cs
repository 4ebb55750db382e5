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
/// moved the small one.
/// </summary>
/// <remarks>
/// With <c>z = M_L + sum_t a_t D_t</c> (<c>D_t = M_t - M_S</c>) both KLs need one log-sum-exp of z and one weighted sum:
/// <c>KL(P~||P) = sum_v p~ (z - M_L) + lse(M_L) - lse(z)</c> and <c>KL(P||P~) = lse(z) - lse(M_L) - sum_t a_t sum_v p D_t</c>,
/// the last sum fixed per position. So all candidates of a chunk are scored at once (one [positions, candidates, V]
/// product), in float64 on the logits' device, in chunks small enough that a long prompt or a large vocabulary stays
/// within tens of MB; the weights and objective come back on the CPU.
/// </remarks>
public static class FusionWeights
{
    const long ChunkElements = 1L << 21;   // doubles per [positions, candidates, V] block: 16 MB

    /// <summary>
    /// The weights [.., E] (float64) that minimise the objective at every position of logits [.., V] of the large model,
    /// the small base and each expert, and the objective they reach [..]. The first candidate in search order with the
    /// least objective wins.
    /// </summary>
    public static (Tensor Weights, Tensor Objective) Solve(Tensor large, Tensor smallBase, IReadOnlyList<Tensor> experts, FusionGrid grid)
    {
        var candidates = grid.Candidates(experts.Count);
        foreach (var (t, i) in experts.Select((t, i) => (t, i)).Prepend((smallBase, -1)))
            if (!t.shape.SequenceEqual(large.shape))
                throw new ArgumentException($"{(i < 0 ? "the small base" : $"expert {i}")} gives logits [{string.Join(",", t.shape)}] but the large model [{string.Join(",", large.shape)}]: the models must share a vocabulary");
        var lead = large.shape[..^1];
        long vocab = Math.Max(large.shape[^1], 1), rows = large.numel() / vocab;
        var weights = zeros([rows, experts.Count], ScalarType.Float64);
        var objective = zeros([rows], ScalarType.Float64);
        using var all = tensor(candidates.SelectMany(c => c).ToArray(), ScalarType.Float64).view(candidates.Count, experts.Count);
        long positions = Math.Max(1, ChunkElements / vocab), perBlock = Math.Max(1, ChunkElements / (positions * vocab));
        for (long start = 0; start < rows; start += positions)
        {
            using var scope = NewDisposeScope();
            long n = Math.Min(positions, rows - start);
            Tensor Rows(Tensor t) => t.reshape(rows, vocab).narrow(0, start, n).to(ScalarType.Float64);   // on the logits' device
            var terms = new Terms(Rows(large), Rows(smallBase), [.. experts.Select(Rows)]);
            var onDevice = all.to(large.device);
            var best = full([n], double.PositiveInfinity, ScalarType.Float64, large.device);
            var chosen = zeros([n], ScalarType.Int64, large.device);
            for (long c0 = 0; c0 < candidates.Count; c0 += perBlock)
            {
                using var block = NewDisposeScope();
                var loss = terms.Loss(onDevice.narrow(0, c0, Math.Min(perBlock, candidates.Count - c0)));   // [n, c]
                var (min, at) = loss.min(1);
                var better = min.lt(best);   // strict: an earlier block keeps a tie, as argmin keeps the first within one
                best.copy_(where(better, min, best));
                chosen.copy_(where(better, at + c0, chosen));
            }
            weights.narrow(0, start, n).copy_(all.index_select(0, chosen.cpu()));
            objective.narrow(0, start, n).copy_(best.cpu());
        }
        return (weights.reshape([.. lead, experts.Count]), objective.reshape(lead));
    }

    /// <summary>What the objective needs of one chunk of positions [n, V], fixed across candidates.</summary>
    sealed class Terms
    {
        readonly Tensor large, lseLarge, deltas, pDeltas, fwd, rev;

        public Terms(Tensor large, Tensor smallBase, Tensor[] experts)
        {
            this.large = large;
            lseLarge = large.logsumexp(-1, keepdim: true);                                  // [n, 1]
            deltas = stack(experts.Select(e => e - smallBase).ToArray(), 1);               // [n, E, V]
            pDeltas = (deltas * (large - lseLarge).exp().unsqueeze(1)).sum(-1);            // [n, E]: sum_v p D_t
            // KL(Q_t||Q) and KL(Q||Q_t) per expert, [n, E]: how far fine-tuning moved the small model, both ways.
            var logQ = smallBase.log_softmax(-1);
            var q = logQ.exp();
            fwd = stack(experts.Select(e => { var lq = e.log_softmax(-1); return (lq.exp() * (lq - logQ)).sum(-1); }).ToArray(), 1);
            rev = stack(experts.Select(e => (q * (logQ - e.log_softmax(-1))).sum(-1)).ToArray(), 1);
        }

        /// <summary>The objective [n, c] of candidates [c, E].</summary>
        public Tensor Loss(Tensor candidates)
        {
            var shift = matmul(candidates, deltas);                     // [n, c, V]: sum_t a_t D_t
            var e = shift + large.unsqueeze(1);                         // z, then exp(z - max z) in place
            var max = e.amax([-1], keepdim: true);
            e.sub_(max).exp_();
            var sum = e.sum(-1);
            var lse = max.squeeze(-1) + sum.log();                      // [n, c]
            var klFusedLarge = matmul(e.unsqueeze(-2), shift.unsqueeze(-1)).squeeze(-1).squeeze(-1) / sum + lseLarge - lse;
            var klLargeFused = lse - lseLarge - matmul(pDeltas, candidates.t());
            var f = (klFusedLarge.unsqueeze(-1) - fwd.unsqueeze(1)).square();   // [n, c, E]
            var r = (klLargeFused.unsqueeze(-1) - rev.unsqueeze(1)).square();
            return (f + r).sum(-1);
        }
    }
}
