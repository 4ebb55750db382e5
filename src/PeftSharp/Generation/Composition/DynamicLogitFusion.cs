using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Generation.Composition;

/// <summary>
/// Dynamic logit fusion (Fan et al., NeurIPS 2024, arXiv:2406.15480): a large model steered by several small task
/// experts, each the small base fine-tuned on one task, decoded as one model. At every position the weights a_t are
/// solved by <see cref="FusionWeights"/> and the scores are <c>M_L + sum_t a_t (M_t - M_S)</c> (raw logits, as
/// proxy-tuning; with one expert and a fixed a it is <see cref="LogitMix.ProxyTuning"/>). Each run keeps its own KV
/// cache inside a composed cache, so generation runs unchanged; the small base and experts that are adapters of one
/// model run as one batch where the adapters allow (<see cref="MemberRuns"/>).
/// </summary>
public sealed class DynamicLogitFusion : ILanguageModel
{
    readonly MemberRuns runs;

    public DynamicLogitFusion(ILanguageModel large, ILanguageModel smallBase, IReadOnlyList<ILanguageModel> experts, FusionGrid? grid = null)
    {
        if (experts.Count == 0) throw new ArgumentException("dynamic logit fusion needs at least one small expert");
        Grid = grid ?? new FusionGrid();
        Grid.Candidates(experts.Count);   // a bad grid fails here, not at the first token
        runs = new MemberRuns([large, smallBase, .. experts]);
        Ensemble.CheckVocabularies(large, experts.Select((e, i) => (e, $"expert {i}")).Prepend((smallBase, "the small base")));
    }

    public FusionGrid Grid { get; }

    /// <summary>Called after every forward with the weights chosen, float64 [B, T, E] on the CPU (valid during the call).</summary>
    public Action<Tensor>? Observer { get; set; }

    public Device Device => runs.Device;

    public KvCache NewCache() => runs.NewCache();

    public bool CacheExpires(long cached, long total) => runs.CacheExpires(cached, total);

    /// <summary>How many forwards one step takes: the small base and adapter experts of one model run as one batch.</summary>
    public int Forwards => runs.Forwards;

    /// <summary>Fused scores [B, T, V] in float32 on the large model's device.</summary>
    public Tensor Forward(ModelInputs inputs)
    {
        using var scope = NewDisposeScope();
        var logits = runs.Logits(inputs, Device, nameof(DynamicLogitFusion));   // large, small base, experts
        var (scores, small, expert) = (logits[0], logits[1], logits[2..]);
        var (weights, _) = FusionWeights.Solve(scores, small, expert, Grid);   // refuses members whose scores differ in shape
        Observer?.Invoke(weights);
        var w = weights.to(ScalarType.Float32, Device);
        for (int t = 0; t < expert.Length; t++)
            scores = scores + w.select(-1, t).unsqueeze(-1) * (expert[t] - small);
        return scores.MoveToOuterDisposeScope();
    }
}
