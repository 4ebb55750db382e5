using PeftSharp.Peft;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.AdaLora;

/// <summary>
/// AdaLoRA's training-time rank allocation (PEFT's <c>RankAllocator</c> and <c>AdaLoraModel.update_and_allocate</c>).
/// The trainer calls, every step: <c>loss + OrthogonalRegularization(model)</c> → backward → optimizer step →
/// <see cref="UpdateAndAllocate"/> → zero_grad.
/// <para>Sensitivity of every entry is I = |p ⊙ ∂L/∂p|, smoothed Ī ← β1 Ī + (1-β1) I with uncertainty
/// Ū ← β2 Ū + (1-β2) |I - Ī|; a singular value i scores S_i = s(Λ_i) + mean_j s(Q_ij) + mean_k s(P_ki) with
/// s = Ī ⊙ Ū. The total budget falls from the initial ranks to target_r per layer on a cubic schedule between
/// tinit and total_step - tfinal; the lowest-scoring singular values beyond the budget are set to zero.</para>
/// </summary>
public sealed class RankAllocator
{
    readonly AdaLoraConfig config;
    readonly string adapter;
    readonly int totalStep;
    readonly SensitivityEma<(string Path, char Which)> scores;
    Dictionary<string, bool[]>? rankPattern;

    public RankAllocator(PeftModel model, string adapter = "default")
    {
        config = model.Configs.GetValueOrDefault(adapter) as AdaLoraConfig
            ?? throw new ArgumentException($"adapter '{adapter}' is not an AdaLoRA adapter");
        this.adapter = adapter;
        totalStep = config.TotalStep is > 0 and var t ? t
            : throw new ArgumentException("AdaLoRA needs total_step (the number of training steps) for its budget schedule");
        if (config.Tinit >= totalStep - config.Tfinal)
            throw new ArgumentException($"tinit ({config.Tinit}) must be below total_step - tfinal ({totalStep} - {config.Tfinal}): no step would prune");
        if (config.Beta1 is <= 0 or >= 1 || config.Beta2 is <= 0 or >= 1)
            throw new ArgumentException($"beta1 and beta2 must lie in (0, 1); got {config.Beta1}, {config.Beta2}");
        if (config.DeltaT <= 0) throw new ArgumentException($"deltaT must be positive, got {config.DeltaT}");
        scores = new SensitivityEma<(string Path, char Which)>(config.Beta1, config.Beta2);
        var layers = Layers(model).ToList();
        InitialBudget = layers.Sum(l => l.Layer.Rank(adapter));
        TargetBudget = config.TargetR * layers.Count;
    }

    /// <summary>Singular values at the start, summed over layers.</summary>
    public int InitialBudget { get; }
    /// <summary>Singular values kept at the end: target_r per layer.</summary>
    public int TargetBudget { get; }
    /// <summary>The budget the last <see cref="UpdateAndAllocate"/> pruned to.</summary>
    public int Budget { get; private set; }

    /// <summary>Which singular values each layer keeps ("&lt;path&gt;.lora_E" → mask), after the first pruning.</summary>
    public IReadOnlyDictionary<string, bool[]>? RankPattern => rankPattern;

    IEnumerable<(string Path, AdaLoraLayer Layer)> Layers(PeftModel model) =>
        model.TunerLayers().Where(x => x.Layer is AdaLoraLayer a && a.Book.Names.Contains(adapter))
            .Select(x => (x.Path, (AdaLoraLayer)x.Layer)).OrderBy(x => x.Path, StringComparer.Ordinal);

    /// <summary>The budget at <paramref name="step"/> and whether this step prunes (PEFT's budget_schedule).</summary>
    public (int Budget, bool Prune) BudgetSchedule(int step)
    {
        if (step <= config.Tinit) return (InitialBudget, false);
        if (step > totalStep - config.Tfinal) return (TargetBudget, true);
        double remaining = 1 - (double)(step - config.Tinit) / (totalStep - config.Tfinal - config.Tinit);
        int budget = (int)((InitialBudget - TargetBudget) * Math.Pow(remaining, 3) + TargetBudget);
        return (budget, step % config.DeltaT == 0);
    }

    /// <summary>
    /// orth_reg_weight × the mean over P and Q of every layer of ||QQᵀ - I||_F and ||PᵀP - I||_F: add it to the loss
    /// before backward (PEFT adds it inside the forward when labels are given).
    /// </summary>
    public Tensor OrthogonalRegularization(PeftModel model) =>
        OrthogonalPenalty.Of(Layers(model).Select(l => ((Tensor)l.Layer.A(adapter), (Tensor)l.Layer.B(adapter))), config.OrthRegWeight);

    /// <summary>
    /// Updates the sensitivity scores from the current gradients and prunes to the step's budget, in place on the
    /// <c>lora_E</c> parameters. Call after backward (and the optimizer step), before zero_grad.
    /// </summary>
    public void UpdateAndAllocate(PeftModel model, int globalStep)
    {
        int pruneEnd = totalStep - config.Tfinal;
        if (globalStep < pruneEnd)
        {
            UpdateScores(model);
            var (budget, prune) = BudgetSchedule(globalStep);
            if (prune) rankPattern = PruneToBudgetInPlace(model, budget);
        }
        else if (globalStep == pruneEnd)
        {
            // The final allocation, from the scores gathered so far; then the scores are no longer needed.
            rankPattern = PruneToBudgetInPlace(model, BudgetSchedule(globalStep).Budget);
            ResetScores();
        }
        else if (rankPattern is not null)
            ApplyRankPatternInPlace(model, rankPattern);
    }

    void UpdateScores(PeftModel model)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        foreach (var (path, layer) in Layers(model))
            foreach (var (which, p) in new[] { ('A', layer.A(adapter)), ('B', layer.B(adapter)), ('E', layer.E(adapter)) })
            {
                var grad = p.grad ?? throw new InvalidOperationException(
                    $"'{path}.lora_{which}' of adapter '{adapter}' has no gradient: call UpdateAndAllocate after backward and before zero_grad");
                scores.Update((path, which), (p * grad).abs());
            }
    }

    void ResetScores() => scores.Clear();

    Tensor Score(string path, char which) => scores.Score((path, which));

    Dictionary<string, bool[]> PruneToBudgetInPlace(PeftModel model, int budget)
    {
        using var scope = NewDisposeScope();
        var triplets = new List<(string Path, AdaLoraLayer Layer, Tensor Score)>();
        foreach (var (path, layer) in Layers(model))
        {
            var q = Score(path, 'A').mean([1]);                 // [r]: mean over in
            var p = Score(path, 'B').mean([0]);                 // [r]: mean over out
            var e = Score(path, 'E').view(-1);                  // [r]
            triplets.Add((path, layer, e + (q + p)));
        }
        int prune = InitialBudget - budget;
        var pattern = new Dictionary<string, bool[]>();
        if (prune <= 0)
        {
            foreach (var (path, layer, _) in triplets) pattern[$"{path}.lora_E"] = Enumerable.Repeat(true, layer.Rank(adapter)).ToArray();
            return pattern;
        }
        var all = cat(triplets.Select(t => t.Score).ToList(), 0);
        double threshold = all.kthvalue(prune, 0).values.item<float>();
        using var _ = no_grad();
        foreach (var (path, layer, score) in triplets)
        {
            var drop = score.le(threshold);
            layer.E(adapter).masked_fill_(drop.view(-1, 1), 0.0);
            pattern[$"{path}.lora_E"] = drop.logical_not().data<bool>().ToArray();
        }
        return pattern;
    }

    void ApplyRankPatternInPlace(PeftModel model, Dictionary<string, bool[]> pattern)
    {
        using var _ = no_grad();
        foreach (var (path, layer) in Layers(model))
        {
            if (!pattern.TryGetValue($"{path}.lora_E", out var keep)) continue;
            var e = layer.E(adapter);
            using var drop = tensor(keep.Select(k => !k).ToArray(), device: e.device).view(-1, 1);
            e.masked_fill_(drop, 0.0);
        }
    }
}
