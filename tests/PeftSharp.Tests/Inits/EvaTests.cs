using PeftSharp.Peft;
using PeftSharp.Training;
using PeftSharp.Tuners;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Inits;

public class EvaTests
{
    static LoraConfig Config(double rho = 2, bool adjust = true) => new()
    {
        R = 4, LoraAlpha = 8, TargetModules = ["q_proj", "k_proj", "v_proj", "down_proj"], InitLoraWeights = "eva",
        EvaConfig = new EvaConfig { Rho = rho, AdjustScalingFactors = adjust },
    };

    [Fact]
    public void Incremental_pca_without_truncation_is_the_pca_of_all_rows()
    {
        using var scope = NewDisposeScope();
        manual_seed(3);
        var scales = tensor(new double[] { 5, 3, 2, 1.5, 1, 0.5 });
        var batches = Enumerable.Range(0, 3).Select(i => randn(20, 6, dtype: ScalarType.Float64) * scales + i).ToList();
        using var pca = new IncrementalPca(6);
        foreach (var b in batches) pca.PartialFit(b);
        var all = cat(batches, 0);
        var centred = all - all.mean([0]);
        var (_, s, vh) = linalg.svd(centred, fullMatrices: false);
        var ratio = s.square() / centred.square().sum();
        Numerics.Close(ratio, pca.ExplainedVarianceRatio!, 1e-10, "explained variance ratio");
        // Same axes up to sign: |<v_i, w_i>| = 1.
        Numerics.Close(ones(6, dtype: ScalarType.Float64), (vh * pca.Axes!).sum([1]).abs(), 1e-8, "axes");
    }

    /// <summary>
    /// One calibration batch, cycled: the second PCA step sees the same rows again, whose top components are exactly
    /// the first step's, so EVA settles there and A must be the exact top principal subspace of the layer's inputs.
    /// </summary>
    [Fact]
    public void A_spans_the_top_principal_subspace_of_each_layers_inputs_and_B_is_zero()
    {
        using var scope = NewDisposeScope();
        var batches = Calib.Batches(1, rows: 8);
        manual_seed(1);
        var pm = PeftModel.Create(Calib.TinyLlama(), Config());
        var before = Calib.Logits(pm, batches);
        var inputs = Calib.Inputs(pm, batches);
        Calibration.Run(pm, batches);
        int checkedLayers = 0;
        foreach (var (path, layer) in Calib.Layers(pm))
        {
            if (!layer.Book.Names.Contains("default")) continue;
            int k = layer.Rank("default");
            var x = inputs[path];
            var (_, _, vh) = linalg.svd(x - x.mean([0]), fullMatrices: false);
            double angle = Calib.MaxPrincipalAngle(layer.A("default").detach(), vh[..k]);
            Assert.True(angle < 1e-4, $"{path}: A (rank {k}) is {angle:F3} rad from the top-{k} principal subspace of its inputs");
            Assert.Equal(0, layer.B("default").detach().abs().max().item<float>());
            checkedLayers++;
        }
        Assert.Equal(8, checkedLayers);
        Numerics.Close(before, Calib.Logits(pm, batches), 1e-6, "EVA starts from the base model");
    }

    [Fact]
    public void Ranks_follow_explained_variance_within_the_budget()
    {
        using var scope = NewDisposeScope();
        var batches = Calib.Batches(8);
        manual_seed(1);
        var pm = PeftModel.Create(Calib.TinyLlama(), Config());
        var results = Eva.Calibrate(pm, "default", Config(), new CalibrationData(batches, b => Objectives.CausalLM(pm, b)));
        Assert.Equal(8 * 4, results.Sum(r => r.Rank));                             // the budget: r per layer
        // q, k and v read the same input: one PCA, shared (PEFT's equal-inputs map).
        foreach (var r in results.Where(r => r.Path.EndsWith("k_proj") || r.Path.EndsWith("v_proj")))
            Assert.EndsWith("q_proj", r.SharedWith);
        // The budget's largest ratios over all layers decide, each layer offering at most round(rho r) = 8.
        var pool = results.SelectMany(r => r.ExplainedVarianceRatio.Take(r.MaxComponents).Select(v => (r.Path, v)))
            .OrderByDescending(x => x.v).Take(8 * 4).ToList();
        foreach (var group in results.GroupBy(r => r.SharedWith))
        {
            Assert.Equal(pool.Count(x => group.Any(r => r.Path == x.Path)), group.Sum(r => r.Rank));
            Assert.Equal(group.Max(r => r.Rank), group.Single(r => r.Path == group.Key).Rank);  // the PCA owner ranks highest
        }
        Assert.Contains(results, r => r.Rank != 4);                                   // the test means something: ranks moved
        var layers = Calib.Layers(pm);
        foreach (var r in results.Where(r => r.Rank > 0))
        {
            Assert.Equal(r.Rank, layers[r.Path].Rank("default"));
            Assert.Equal(2.0, layers[r.Path].Scaling("default"), 12);               // adjust_scaling_factors keeps alpha / r
        }
    }

    [Fact]
    public void The_saved_adapter_carries_rank_and_alpha_patterns_and_loads_back()
    {
        using var scope = NewDisposeScope();
        var batches = Calib.Batches(8);
        manual_seed(1);
        var pm = PeftModel.Create(Calib.TinyLlama(), Config(rho: 3));
        Calibration.Run(pm, batches);
        using (no_grad())
            foreach (var p in pm.TrainableParameters()) p.P.add_(randn_like(p.P) * 0.05);  // as if trained
        var trained = Calib.Logits(pm, batches);
        var dir = Path.Combine(IO.SafetensorsTests.TempDir(), "eva");
        pm.Save(dir);
        var saved = (LoraConfig)PeftConfigJson.Load(Path.Combine(dir, PeftConfigJson.FileName));
        Assert.Equal("eva", saved.InitLoraWeights);
        var layers = Calib.Layers(pm).Where(kv => kv.Value.Book.Names.Contains("default")).ToList();
        foreach (var (path, layer) in layers)
        {
            Assert.Equal(layer.Rank("default"), saved.RankFor(path));
            Assert.Equal(8.0 * layer.Rank("default") / 4, saved.AlphaFor(path), 12);
        }
        Assert.NotEmpty(saved.RankPattern);
        var back = PeftModel.FromPretrained(Calib.TinyLlama(), dir);
        Numerics.Close(trained, Calib.Logits(back, batches), 1e-6, "reloaded");
    }
}
