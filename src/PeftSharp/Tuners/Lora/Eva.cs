using PeftSharp.Data;
using PeftSharp.Peft;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Lora;

/// <summary>PEFT's <c>eva_config</c> (EVA's settings, under PEFT's JSON names).</summary>
public sealed record EvaConfig
{
    /// <summary>A layer may take up to round(r * rho) components; rho = 1 keeps every layer at r.</summary>
    public double Rho { get; init; } = 2.0;
    /// <summary>A component has settled when its cosine similarity with the previous step's is at least tau.</summary>
    public double Tau { get; init; } = 0.99;
    /// <summary>Leave out of the PCA the positions whose label is <see cref="LabelMaskValue"/> (besides padding).</summary>
    public bool UseLabelMask { get; init; } = true;
    public int LabelMaskValue { get; init; } = -100;
    /// <summary>Divide each component by the square root of its singular value.</summary>
    public bool Whiten { get; init; }
    /// <summary>Scale alpha with the new rank (alpha * r_new / r), so every layer keeps the scaling alpha / r.</summary>
    public bool AdjustScalingFactors { get; init; } = true;
}

/// <summary>
/// EVA, explained variance adaptation (Paischer et al., 2024, https://arxiv.org/abs/2410.07170): A of each layer is
/// the top right-singular vectors of the layer's inputs X (rows: tokens), found by incremental PCA over the
/// calibration batches (cycled) until the components a layer needs stop changing (cosine >= tau); B = 0. The rank
/// budget sum(r) is then shared out by explained variance: the budget's largest ratios sigma_i^2 / sum(Var X) over all
/// layers win, each layer taking at most round(rho * r). As PEFT's <c>initialize_lora_eva_weights</c>: layers fed the
/// same input (q, k, v) share one PCA, a layer given rank 0 loses its adapter, and the save writes
/// <c>rank_pattern</c>, <c>alpha_pattern</c> (with adjust_scaling_factors) and the remaining <c>target_modules</c>.
/// PEFT's default label mask never applies (it tests <c>hasattr(dict, "labels")</c>); here use_label_mask does what
/// its documentation says.
/// </summary>
internal static class Eva
{
    /// <summary>Passes over the calibration batches after which components that still move are an error.</summary>
    internal const int MaxPasses = 50;

    /// <summary>What calibration found for one layer, for tests and reports.</summary>
    internal sealed record LayerResult(string Path, string SharedWith, int Rank, double[] ExplainedVarianceRatio, int MaxComponents);

    public static List<LayerResult> Calibrate(PeftModel model, string adapter, LoraConfig c, CalibrationData data)
    {
        var eva = c.EvaConfig ?? new EvaConfig();
        if (eva.Rho < 1) throw new ArgumentException($"eva_config.rho is {eva.Rho}; it must be at least 1");
        if (eva.Tau is < 0 or > 1) throw new ArgumentException($"eva_config.tau is {eva.Tau}; it must be in [0, 1]");
        var layers = model.TunerLayers()
            .Where(x => x.Layer is LoraLayer l && l.Book.Names.Contains(adapter) && l.Kind != BaseKind.Embedding)
            .Select(x => (x.Path, Layer: (LoraLayer)x.Layer)).ToList();
        if (layers.Count == 0) return [];
        var maxComponents = layers.ToDictionary(x => x.Path, x => (int)Math.Round(c.RankFor(x.Path) * eva.Rho, MidpointRounding.ToEven));
        int budget = layers.Sum(x => c.RankFor(x.Path));

        bool training = model.Base.training;
        model.Base.eval();
        var pcas = new Dictionary<string, IncrementalPca>();
        try
        {
            using var disabled = model.DisableAdapters();
            using var noGrad = no_grad();
            var shared = SharedInputs(layers, data);
            foreach (var group in layers.GroupBy(x => shared[x.Path]))
            {
                int k = group.Max(x => maxComponents[x.Path]);
                foreach (var x in group) maxComponents[x.Path] = k;
                pcas[group.Key] = new IncrementalPca(k);
            }
            var converged = pcas.ToDictionary(kv => kv.Key, kv => new bool[kv.Value.Components]);
            var rankOf = new Dictionary<string, int>(maxComponents);
            var byPath = layers.ToDictionary(x => x.Path, x => x.Layer);
            for (int step = 0; ; step++)
            {
                var open = pcas.Keys.Where(p => !converged[p].Take(rankOf[p]).All(b => b)).ToList();
                if (open.Count == 0) break;
                if (step >= MaxPasses * data.Batches.Count)
                    throw new InvalidOperationException($"EVA: the components of {string.Join(", ", open.Take(3))} did not settle (cosine >= tau = {eva.Tau}) " +
                        $"within {MaxPasses} passes over {data.Batches.Count} calibration batch(es); give more batches (--init-batches) or a lower eva_config.tau");
                using var scope = NewDisposeScope();
                var batch = data.Batches[step % data.Batches.Count];
                var rows = TokenRows(batch, eva);
                foreach (var p in open) byPath[p].InputTap = x => Fit(pcas[p], converged[p], eva.Tau, x, rows);
                try { data.Loss(batch); }
                finally { foreach (var p in open) byPath[p].InputTap = null; }
                if (pcas.Values.All(pca => pca.Axes is not null)) rankOf = Distribute(layers.Select(x => x.Path).ToList(), shared, pcas, maxComponents, budget);
            }

            var results = new List<LayerResult>();
            foreach (var (path, layer) in layers)
            {
                var pca = pcas[shared[path]];
                int rank = rankOf[path];
                results.Add(new LayerResult(path, shared[path], rank, Ratios(pca), maxComponents[path]));
                if (rank == 0) { ((ITunerLayer)layer).DeleteAdapter(adapter); layer.DroppedByCalibration.Add(adapter); continue; }
                using var scope = NewDisposeScope();
                var a = pca.Axes![..rank];
                if (eva.Whiten) a = a / pca.SingularValues![..rank].sqrt().view(-1, 1);
                int r = c.RankFor(path);
                if (rank != r) layer.Rebuild(adapter, rank, ScalingFor(c, path, rank), c);
                layer.A(adapter).copy_(a);
                layer.B(adapter).zero_();
            }
            return results;
        }
        finally
        {
            foreach (var pca in pcas.Values) pca.Dispose();
            model.Base.train(training);
        }
    }

    static double[] Ratios(IncrementalPca pca) => pca.ExplainedVarianceRatio!.cpu().data<double>().ToArray();

    /// <summary>alpha after the rank change (PEFT: alpha * r_new / r when adjust_scaling_factors).</summary>
    public static double AlphaFor(LoraConfig c, string path, int rank)
    {
        int r = c.RankFor(path);
        double alpha = c.AlphaFor(path);
        return rank != r && (c.EvaConfig ?? new EvaConfig()).AdjustScalingFactors ? alpha * rank / r : alpha;
    }

    static double ScalingFor(LoraConfig c, string path, int rank)
    {
        double alpha = AlphaFor(c, path, rank);
        return c.UseRslora ? alpha / Math.Sqrt(rank) : alpha / rank;
    }

    // One PCA step on the layer's input rows; a component has settled when it barely moved since the last step.
    static void Fit(IncrementalPca pca, bool[] converged, double tau, Tensor x, Tensor rows)
    {
        using var scope = NewDisposeScope();
        var states = x.detach().reshape(-1, x.shape[^1]).index_select(0, rows.to(x.device));
        if (states.shape[0] < pca.Components) return; // PEFT skips a batch with fewer rows than components
        var previous = pca.Axes?.clone();
        pca.PartialFit(states);
        if (previous is null) return;
        var similarity = nn.functional.cosine_similarity(pca.Axes!, previous, 1).cpu().data<double>().ToArray();
        for (int i = 0; i < converged.Length; i++) converged[i] = i < similarity.Length && similarity[i] >= tau;
    }

    /// <summary>Flat positions of the batch's real tokens (and, with the label mask, of those with a label).</summary>
    static Tensor TokenRows(Batch b, EvaConfig eva)
    {
        var mask = b.AttentionMask.to(ScalarType.Bool);
        if (eva.UseLabelMask && b.Labels is { } labels) mask = mask.logical_and(labels.ne(eva.LabelMaskValue));
        return mask.reshape(-1).nonzero().reshape(-1);
    }

    /// <summary>
    /// Each layer's PCA owner: the first layer whose input was equal to its own on the first batch (PEFT hashes the
    /// inputs of one forward pass).
    /// </summary>
    static Dictionary<string, string> SharedInputs(List<(string Path, LoraLayer Layer)> layers, CalibrationData data)
    {
        var inputs = new Dictionary<string, Tensor>();
        foreach (var (path, layer) in layers) layer.InputTap = x => inputs[path] = x.detach().clone().DetachFromDisposeScope();
        try { data.Loss(data.Batches[0]); }
        finally { foreach (var (_, layer) in layers) layer.InputTap = null; }
        try
        {
        var owner = new Dictionary<string, string>();
        var owners = new List<string>();
        foreach (var (path, _) in layers)
        {
            var x = inputs.GetValueOrDefault(path) ?? throw new InvalidOperationException($"EVA: layer '{path}' saw no input in a forward pass");
            var same = owners.FirstOrDefault(o => inputs[o].shape.SequenceEqual(x.shape) && inputs[o].eq(x).all().item<bool>());
            if (same is null) owners.Add(path);
            owner[path] = same ?? path;
        }
        return owner;
        }
        finally { foreach (var x in inputs.Values) x.Dispose(); }
    }

    /// <summary>
    /// The rank budget goes to the largest explained-variance ratios over all layers (a layer's candidates are its first
    /// max-components ratios, from its PCA owner); a layer sharing its owner's input never ends above the owner, whose
    /// components it uses.
    /// </summary>
    internal static Dictionary<string, int> Distribute(List<string> paths, IReadOnlyDictionary<string, string> owner,
        IReadOnlyDictionary<string, IncrementalPca> pcas, IReadOnlyDictionary<string, int> maxComponents, int budget)
    {
        var ratios = pcas.ToDictionary(kv => kv.Key, kv => Ratios(kv.Value));
        var counts = Allocate(paths.Select(p => (p, ratios[owner[p]].Take(maxComponents[p]).ToArray())).ToList(), budget);
        foreach (var p in paths)
        {
            var o = owner[p];
            if (o != p && counts[o] < counts[p]) (counts[o], counts[p]) = (counts[p], counts[o]);
        }
        return counts;
    }

    /// <summary>How many of the <paramref name="budget"/> largest values (ties: earlier first) each key has.</summary>
    internal static Dictionary<string, int> Allocate(List<(string Key, double[] Values)> candidates, int budget)
    {
        var counts = candidates.ToDictionary(x => x.Key, _ => 0);
        var all = candidates.SelectMany(x => x.Values.Select(v => (x.Key, Value: v))).ToList();
        foreach (var (key, _) in all.OrderByDescending(x => x.Value).Take(budget)) counts[key]++;
        return counts;
    }

    /// <summary>The saved config: ranks and alphas as calibration left them, and only the layers that kept an adapter.</summary>
    public static LoraConfig ForSave(PeftModel model, string adapter, LoraConfig c)
    {
        var rankPattern = new Dictionary<string, double>();
        var alphaPattern = new Dictionary<string, double>();
        var kept = new List<string>();
        bool dropped = false;
        foreach (var (path, layer) in model.TunerLayers())
        {
            if (layer is not LoraLayer lora) continue;
            if (!lora.Book.Names.Contains(adapter)) { dropped |= lora.DroppedByCalibration.Contains(adapter); continue; }
            kept.Add(path);
            int rank = lora.Rank(adapter);
            double alpha = AlphaFor(c, path, rank);
            if (rank != c.R) rankPattern[path] = rank;
            if (alpha != c.LoraAlpha) alphaPattern[path] = alpha;
        }
        return c with
        {
            RankPattern = rankPattern, AlphaPattern = alphaPattern,
            TargetModules = dropped ? ModuleSelector.Of([.. kept]) : c.TargetModules,
        };
    }
}
