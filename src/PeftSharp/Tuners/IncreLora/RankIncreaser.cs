using PeftSharp.Peft;
using PeftSharp.Tuners.AdaLora;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.IncreLora;

/// <summary>
/// IncreLoRA's training-time rank allocation (the authors' <c>RankAllocator.update_and_increase</c>). After every
/// optimizer step, while the total rank is below its target: each module's sensitivity I_k (the mean of
/// |p ⊙ ∂L/∂p| over its P, Λ and Q, AdaLoRA's measure) is smoothed into Ī_k and Ū_k (<see cref="SensitivityEma{TKey}"/>),
/// and on every deltaT-th step after tinit the top_h modules by Ī_k Ū_k each gain incre_rank_num components (fewer
/// when the budget runs out). New components start with Λ = 0, so the output does not move; their optimizer state
/// starts at zero (the per-parameter AdamW grows a parameter's moments with it).
/// <para>Differences from the authors' code: no "advance learning" (their reserve components pre-trained with Λ fixed
/// at 1e-5; ours is their <c>advance_learn=False</c> path); the scale alpha / r follows the new r with Λ rescaled so the
/// output is unchanged (theirs jumps); new components share their tensor's Adam step count and learning rate (theirs
/// get a new parameter group with its own warm-up).</para>
/// </summary>
public sealed class RankIncreaser : IDisposable
{
    readonly IncreLoraConfig config;
    readonly string adapter;
    readonly SensitivityEma<string> scores;

    public RankIncreaser(PeftModel model, string adapter = "default")
    {
        config = model.Configs.GetValueOrDefault(adapter) as IncreLoraConfig
            ?? throw new ArgumentException($"adapter '{adapter}' is not an IncreLoRA adapter");
        this.adapter = adapter;
        if (config.Beta1 is <= 0 or >= 1 || config.Beta2 is <= 0 or >= 1)
            throw new ArgumentException($"beta1 and beta2 must lie in (0, 1); got {config.Beta1}, {config.Beta2}");
        scores = new SensitivityEma<string>(config.Beta1, config.Beta2);
        var layers = Layers(model).ToList();
        if (layers.Count == 0) throw new ArgumentException($"adapter '{adapter}' wraps no module");
        TargetTotal = config.TargetTotalRank ?? config.TargetR * layers.Count;
        int initial = layers.Sum(l => l.Layer.Rank(adapter));
        if (TargetTotal < initial)
            throw new ArgumentException($"the IncreLoRA target total rank {TargetTotal} is below the initial {initial} (init_r {config.InitR} x {layers.Count} modules)");
        TopH = config.TopH ?? Math.Max(1, layers.Count / 4);
        IncreRankNum = config.IncreRankNum ?? Math.Max(1, config.TargetR / 2);
        if (TopH <= 0 || IncreRankNum <= 0) throw new ArgumentException($"top_h ({TopH}) and incre_rank_num ({IncreRankNum}) must be positive");
        int rounds = (int)Math.Ceiling((TargetTotal - initial) / (double)(TopH * IncreRankNum));
        DeltaT = config.DeltaT ?? Math.Max(1, (Math.Max(config.TotalStep ?? 0, 2) / 2 - config.Tinit) / Math.Max(rounds, 1));
        if (DeltaT <= 0) throw new ArgumentException($"deltaT must be positive, got {DeltaT}");
    }

    /// <summary>The total rank at which growth stops.</summary>
    public int TargetTotal { get; }
    public int TopH { get; }
    public int IncreRankNum { get; }
    public int DeltaT { get; }

    /// <summary>The adapter's rank per module path, in path order.</summary>
    public IReadOnlyDictionary<string, int> Ranks(PeftModel model) => Layers(model).ToDictionary(l => l.Path, l => l.Layer.Rank(adapter));

    IEnumerable<(string Path, IncreLoraLayer Layer)> Layers(PeftModel model) =>
        model.TunerLayers().Where(x => x.Layer is IncreLoraLayer l && l.Book.Names.Contains(adapter))
            .Select(x => (x.Path, (IncreLoraLayer)x.Layer)).OrderBy(x => x.Path, StringComparer.Ordinal);

    /// <summary>AdaLoRA's orthogonality penalty over P and Q of every module, weighted by orth_reg_weight.</summary>
    public Tensor OrthogonalRegularization(PeftModel model) =>
        OrthogonalPenalty.Of(Layers(model).Select(l => ((Tensor)l.Layer.A(adapter), (Tensor)l.Layer.B(adapter))), config.OrthRegWeight);

    /// <summary>
    /// Updates the scores from the current gradients and, on an increase step, grows the top modules. Call after the
    /// optimizer step, before the gradients are cleared. Returns the modules that grew.
    /// </summary>
    public IReadOnlyList<string> UpdateAndIncrease(PeftModel model, int step)
    {
        var layers = Layers(model).ToList();
        int total = layers.Sum(l => l.Layer.Rank(adapter));
        if (total >= TargetTotal) return [];
        UpdateScores(layers);
        if (step <= config.Tinit || step % DeltaT != 0) return [];
        return IncreaseInPlace(layers, TargetTotal - total);
    }

    void UpdateScores(List<(string Path, IncreLoraLayer Layer)> layers)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        foreach (var (path, layer) in layers)
        {
            Tensor sum = zeros(1);
            long count = 0;
            foreach (var (which, p) in new[] { ('A', layer.A(adapter)), ('E', layer.E(adapter)), ('B', layer.B(adapter)) })
            {
                var grad = p.grad ?? throw new InvalidOperationException(
                    $"'{path}.lora_{which}' of adapter '{adapter}' has no gradient: IncreLoRA scores modules after backward and before zero_grad");
                sum = sum.to(p.device) + (p * grad).abs().sum();
                count += p.numel();
            }
            scores.Update(path, (sum / count).view(1));
        }
    }

    List<string> IncreaseInPlace(List<(string Path, IncreLoraLayer Layer)> layers, int remaining)
    {
        using var scope = NewDisposeScope();
        var ranked = layers.Select((l, i) => (l.Path, l.Layer, Score: scores.Score(l.Path).item<float>(), Order: i))
            .OrderByDescending(x => x.Score).ThenBy(x => x.Order).Take(TopH);
        var grown = new List<string>();
        foreach (var (path, layer, _, _) in ranked)
        {
            if (remaining <= 0) break;
            int add = Math.Min(IncreRankNum, remaining);
            layer.GrowInPlace(adapter, add);
            remaining -= add;
            grown.Add(path);
        }
        return grown;
    }

    const string RankKey = ".rank", AvgKey = ".score_avg", UncKey = ".score_unc";

    /// <summary>What a resumed run needs: every module's rank and smoothed scores (new tensors, owned by the caller).</summary>
    public Dictionary<string, Tensor> CheckpointState(PeftModel model)
    {
        var state = new Dictionary<string, Tensor>();
        foreach (var (path, layer) in Layers(model))
        {
            var key = $"increlora.{adapter}.{path}";
            state[key + RankKey] = tensor((long)layer.Rank(adapter));
            if (!scores.Contains(path)) continue;
            var (avg, unc) = scores.Averages(path);
            state[key + AvgKey] = avg.detach().clone();
            state[key + UncKey] = unc.detach().clone();
        }
        return state;
    }

    /// <summary>Grows every module to its saved rank (the checkpoint's parameters fill the values) and restores the scores.</summary>
    public void RestoreCheckpointState(PeftModel model, IReadOnlyDictionary<string, Tensor> state, string source)
    {
        foreach (var (path, layer) in Layers(model))
        {
            var key = $"increlora.{adapter}.{path}";
            if (!state.TryGetValue(key + RankKey, out var rank))
                throw new InvalidDataException($"{source}: no '{key + RankKey}' (the module's IncreLoRA rank); was it written by another adapter configuration?");
            int saved = (int)rank.item<long>(), now = layer.Rank(adapter);
            if (saved < now)
                throw new InvalidDataException($"{source}: '{key + RankKey}' is {saved}, below the module's current rank {now}; ranks only grow");
            layer.GrowInPlace(adapter, saved - now, random: false);
            if (state.TryGetValue(key + AvgKey, out var avg) && state.TryGetValue(key + UncKey, out var unc))
                scores.Restore(path, avg, unc);
        }
    }

    public void Dispose() => scores.Dispose();
}
