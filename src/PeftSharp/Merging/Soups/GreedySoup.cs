namespace PeftSharp.Merging;

/// <summary>One step of a greedy soup: the ingredient tried, the held-out loss of the soup with it, and whether it stayed.</summary>
public sealed record SoupStep(string Model, double IndividualLoss, double SoupLoss, bool Kept);

/// <summary>What a greedy soup kept, and the loss of the soup written.</summary>
public sealed record GreedySoupResult(IReadOnlyList<SoupStep> Steps, IReadOnlyList<string> Kept, double Loss, MergeResult Merge);

/// <summary>
/// Greedy soup (Wortsman et al., "Model soups", https://arxiv.org/abs/2203.05482, recipe 1): rank the models by their
/// own held-out score, start the soup with the best, and add each next one only if the uniform average of the soup
/// with it scores no worse on the held-out data. The paper keeps an ingredient when held-out accuracy does not drop;
/// here the score is the held-out loss, kept when <c>loss(soup + m) &lt;= loss(soup)</c>. The result is the uniform
/// soup of the kept models: mergekit's <c>linear</c> with equal weights.
/// </summary>
public static class GreedySoup
{
    /// <param name="config">a <c>linear</c> merge of the ingredients, without per-model weights.</param>
    /// <param name="loss">held-out loss of a model folder (see <see cref="HeldOutLoss"/>).</param>
    /// <param name="progress">told of each ingredient's own loss and each step as it is taken.</param>
    public static GreedySoupResult Run(MergeConfig config, Func<string, double> loss, string outputFolder, MergeOptions? options = null,
        Action<string>? progress = null)
    {
        Check(config);
        options ??= new MergeOptions();
        var scratch = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(outputFolder))!, $".soup-{Guid.NewGuid():N}");
        try
        {
            int candidates = 0;
            double Score(IReadOnlyList<MergeModel> soup)
            {
                // each candidate soup is merged (streamed, as any merge) into scratch space and evaluated from there
                var folder = Path.Combine(scratch, $"candidate-{candidates++}");
                ModelMerger.Run(Uniform(config, soup), folder, options with { CopyTokenizer = false, Progress = null });
                try { return loss(folder); }
                finally { Directory.Delete(folder, recursive: true); }
            }

            var individual = config.Models.Select(m =>
            {
                double l = Score([m]);
                progress?.Invoke($"{m.Model}: held-out loss {l:F4}");
                return (Model: m, Loss: l);
            }).ToList();
            // best first; ties keep the YAML's order (OrderBy is stable)
            var ranked = individual.OrderBy(x => double.IsNaN(x.Loss) ? double.PositiveInfinity : x.Loss).ToList();

            var soup = new List<MergeModel> { ranked[0].Model };
            double best = ranked[0].Loss;
            var steps = new List<SoupStep> { new(ranked[0].Model.Model, ranked[0].Loss, best, Kept: true) };
            progress?.Invoke($"soup: {ranked[0].Model.Model} (loss {best:F4})");
            foreach (var (model, own) in ranked.Skip(1))
            {
                double with = Score([.. soup, model]);
                bool keep = with <= best;
                steps.Add(new SoupStep(model.Model, own, with, keep));
                progress?.Invoke(keep ? $"soup + {model.Model}: loss {with:F4} <= {best:F4}, kept"
                    : $"soup + {model.Model}: loss {with:F4} > {best:F4}, left out");
                if (!keep) continue;
                soup.Add(model);
                best = with;
            }
            var merge = ModelMerger.Run(Uniform(config, soup), outputFolder, options);
            return new GreedySoupResult(steps, soup.Select(m => m.Model).ToList(), best, merge);
        }
        finally
        {
            if (Directory.Exists(scratch)) Directory.Delete(scratch, recursive: true);
        }
    }

    /// <summary>The uniform soup of <paramref name="models"/>: linear, weight 1 each, normalised.</summary>
    static MergeConfig Uniform(MergeConfig config, IReadOnlyList<MergeModel> models) => config with
    {
        Models = models.Select(m => m with { Parameters = null }).ToList(),
        Parameters = new Dictionary<string, ParameterSetting> { ["weight"] = ParameterSetting.Of(1.0), ["normalize"] = ParameterSetting.Of(true) },
    };

    static void Check(MergeConfig config)
    {
        if (config.MergeMethod != "linear")
            throw new MergeException($"a greedy soup averages its models uniformly: merge_method must be linear, not {config.MergeMethod}");
        if (config.Slices is not null || config.Models.Count == 0)
            throw new MergeException("a greedy soup needs its ingredients under models:");
        var weighted = config.Models.FirstOrDefault(m => m.Parameters?.Count > 0) is { } w ? w.Model
            : config.Parameters.Keys.FirstOrDefault(k => k != "normalize") is { } k ? $"parameters.{k}" : null;
        if (weighted is not null)
            throw new MergeException($"a greedy soup averages its models uniformly: remove the parameters of '{weighted}' (the soup sets the weights)");
        if (config.AdapterOutput is not null)
            throw new MergeException("a greedy soup is evaluated as a model: adapter_output is not supported with it");
    }
}
