using PeftSharp.Data;
using PeftSharp.Peft;
using PeftSharp.Training;
using PeftSharp.Tuners;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Inits;

public class CordaTests
{
    static LoraConfig Config(string method) => new()
    {
        R = 4, LoraAlpha = 8, TargetModules = ["q_proj", "v_proj", "down_proj"], InitLoraWeights = "corda",
        CordaConfig = new CordaConfig { CordaMethod = method },
    };

    [Theory]
    [InlineData("ipm")]
    [InlineData("kpm")]
    public void Residual_plus_adapter_is_the_original_weight_and_the_logits_do_not_move(string method)
    {
        using var scope = NewDisposeScope();
        var batches = Calib.Batches(6);
        manual_seed(1);
        var pm = PeftModel.Create(Calib.TinyLlama(), Config(method));
        var before = Calib.Logits(pm, batches);
        var original = Calib.Layers(pm).ToDictionary(kv => kv.Key, kv => BaseLayers.WeightOutIn(kv.Value.BaseLayer).detach().clone());
        Calibration.Run(pm, batches);
        foreach (var (path, layer) in Calib.Layers(pm))
        {
            var residual = BaseLayers.WeightOutIn(layer.BaseLayer).detach();
            Assert.True(Numerics.MaxAbsDiff(residual, original[path]) > 1e-4, $"{path}: the base must have changed for this test to mean anything");
            Numerics.Close(original[path], residual + layer.Scaling("default") * layer.LoraProduct("default").detach(), 1e-5, path);
        }
        Numerics.Close(before, Calib.Logits(pm, batches), 1e-4, method);
    }

    [Fact]
    public void Ipm_takes_the_largest_and_kpm_the_smallest_components_of_w_times_the_input_covariance()
    {
        using var scope = NewDisposeScope();
        var batches = Calib.Batches(6);
        foreach (var (method, largest) in new[] { ("ipm", true), ("kpm", false) })
        {
            manual_seed(1);
            var pm = PeftModel.Create(Calib.TinyLlama(), Config(method));
            var covariance = Covariances(pm, batches);
            var weights = Calib.Layers(pm).ToDictionary(kv => kv.Key, kv => BaseLayers.WeightOutIn(kv.Value.BaseLayer).detach().clone().to(ScalarType.Float64));
            Calibration.Run(pm, batches);
            foreach (var (path, layer) in Calib.Layers(pm))
            {
                var c = covariance[path];
                var damped = c + eye(c.shape[0], dtype: ScalarType.Float64) * c.diagonal().mean() * 0.01;
                var (u, s, vh) = linalg.svd(weights[path].matmul(damped), fullMatrices: false);
                int r = 4;
                var pick = largest ? TensorIndex.Slice(0, r) : TensorIndex.Slice(s.shape[0] - r, null);
                var expected = (u[.., pick] * s[pick]).matmul(vh[pick]);                 // the chosen r components of W C
                var adapter = (layer.Scaling("default") * layer.LoraProduct("default").detach()).to(ScalarType.Float64).matmul(damped);
                Numerics.Close(expected, adapter, 2e-3 * expected.abs().max().item<double>(), $"{method} {path}");
            }
        }
    }

    // PEFT's covariance: per sequence X / |max X|, X^T X summed, averaged over sequences.
    static Dictionary<string, Tensor> Covariances(PeftModel pm, List<Batch> batches)
    {
        var sums = new Dictionary<string, Tensor>();
        long sequences = 0;
        foreach (var b in batches)
        {
            var rows = b.InputIds.shape[0];
            foreach (var (path, x) in Calib.Inputs(pm, [b]))
                foreach (var seq in x.reshape(rows, -1, x.shape[^1]).unbind(0))
                {
                    var scaled = seq / seq.max().abs();
                    var cov = scaled.t().matmul(scaled);
                    sums[path] = sums.TryGetValue(path, out var s) ? s + cov : cov;
                }
            sequences += rows;
        }
        return sums.ToDictionary(kv => kv.Key, kv => kv.Value / sequences);
    }

    [Fact]
    public void The_save_is_a_plain_lora_of_the_original_base()
    {
        using var scope = NewDisposeScope();
        var batches = Calib.Batches(6);
        manual_seed(1);
        var pm = PeftModel.Create(Calib.TinyLlama(), Config("ipm"));
        Calibration.Run(pm, batches);
        using (no_grad())
            foreach (var p in pm.TrainableParameters()) p.P.add_(randn_like(p.P) * 0.05);
        var trained = Calib.Logits(pm, batches);
        var dir = Path.Combine(IO.SafetensorsTests.TempDir(), "corda");
        pm.Save(dir);
        var saved = (LoraConfig)PeftConfigJson.Load(Path.Combine(dir, PeftConfigJson.FileName));
        Assert.Equal(8, saved.R);
        Assert.Equal("true", saved.InitLoraWeights);
        Assert.Null(saved.CordaConfig);
        Numerics.Close(trained, Calib.Logits(PeftModel.FromPretrained(Calib.TinyLlama(), dir), batches), 1e-4, "on the original base");
    }
}
