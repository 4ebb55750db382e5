using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Generation.Composition;

/// <summary>The space in which <see cref="LogitMix"/> adds its members' scores.</summary>
public enum MixSpace
{
    /// <summary>Raw logits, as proxy-tuning (Liu et al. 2024, arXiv:2401.08565): z_L + β (z_T − z_B).</summary>
    Logits,

    /// <summary>Log-probabilities, as EFT up-scaling (Mitchell et al. 2023, arXiv:2310.12962): log p_L + β (log p_T − log p_B).</summary>
    LogProbs,
}

/// <summary>One behaviour delta: a small tuned model, the same small model untuned, and how much of their difference to add.</summary>
public sealed record ExpertDelta(ILanguageModel Tuned, ILanguageModel Untuned, double Beta = 1.0);

/// <summary>
/// A large model steered by the difference between small tuned and untuned models, decoded as one model:
/// scores = s(large) + Σ_i β_i (s(tuned_i) − s(untuned_i)), with s the raw logits (<see cref="MixSpace.Logits"/>,
/// proxy-tuning) or the log-softmax (<see cref="MixSpace.LogProbs"/>, EFT). The two spaces differ, per position, by the
/// constant Σ β_i (lse(tuned_i) − lse(untuned_i)) + lse(large) only, so they give the same distribution after a
/// log-softmax for every β; the scores themselves differ, which matters to what <c>logits</c> writes and to the
/// repetition penalty (it scales scores by their sign), not to greedy, temperature, top-k or top-p decoding.
/// Each run keeps its own KV cache inside a composed cache (<see cref="KvCache.Of"/>), so generation runs unchanged; a
/// tuned model and its untuned self (an adapter on and off) run as one batch where the adapter allows (<see cref="MemberRuns"/>).
/// </summary>
public sealed class LogitMix : ILanguageModel
{
    readonly ILanguageModel large;
    readonly ExpertDelta[] deltas;
    readonly MixSpace space;
    readonly MemberRuns runs;

    public LogitMix(ILanguageModel large, IReadOnlyList<ExpertDelta> deltas, MixSpace space)
    {
        if (deltas.Count == 0) throw new ArgumentException("give at least one tuned/untuned pair to add to the large model");
        foreach (var d in deltas)
            if (!double.IsFinite(d.Beta)) throw new ArgumentException($"beta must be a finite number, not {d.Beta}");
        this.large = large;
        this.deltas = [.. deltas];
        this.space = space;
        CheckVocabularies();
        runs = new MemberRuns([.. deltas.SelectMany(d => new[] { d.Tuned, d.Untuned }).Prepend(large)]);
    }

    /// <summary>Proxy-tuning: the large model's logits plus β times the small tuned minus the small untuned model's.</summary>
    public static LogitMix ProxyTuning(ILanguageModel large, ILanguageModel smallTuned, ILanguageModel smallUntuned, double beta = 1.0) =>
        new(large, [new ExpertDelta(smallTuned, smallUntuned, beta)], MixSpace.Logits);

    /// <summary>EFT up-scaling: the large model's log-probabilities plus each delta's β-weighted log-ratio.</summary>
    public static LogitMix Eft(ILanguageModel large, params ExpertDelta[] deltas) => new(large, deltas, MixSpace.LogProbs);

    public Device Device => large.Device;

    public KvCache NewCache() => runs.NewCache();

    public bool CacheExpires(long cached, long total) => runs.CacheExpires(cached, total);

    /// <summary>How many forwards one step takes: a tuned/untuned pair of one adapted model runs as one batch.</summary>
    public int Forwards => runs.Forwards;

    /// <summary>Combined scores [B, T, V] in float32 on the large model's device.</summary>
    public Tensor Forward(ModelInputs inputs)
    {
        using var scope = NewDisposeScope();
        var logits = runs.Logits(inputs, Device, nameof(LogitMix)).Select(Score).ToArray();   // large, then tuned/untuned per delta
        var scores = logits[0];
        for (int i = 0; i < deltas.Length; i++)
        {
            var (tuned, untuned) = (logits[1 + 2 * i], logits[2 + 2 * i]);
            Ensemble.CheckShape(scores, tuned, $"delta {i}'s tuned model");
            Ensemble.CheckShape(scores, untuned, $"delta {i}'s untuned model");
            scores = scores + deltas[i].Beta * (tuned - untuned);
        }
        return scores.MoveToOuterDisposeScope();
    }

    Tensor Score(Tensor logits) => space == MixSpace.LogProbs ? logits.log_softmax(-1) : logits;

    // Sizes known from the configs are checked up front; others are caught by the shape check on the first forward.
    void CheckVocabularies() => Ensemble.CheckVocabularies(large,
        deltas.SelectMany((d, i) => new[] { (d.Tuned, $"delta {i}'s tuned model"), (d.Untuned, $"delta {i}'s untuned model") }));
}
