using PeftSharp.Models;
using PeftSharp.Data;
using PeftSharp.Peft;
using PeftSharp.Training;
using PeftSharp.Tuners;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Inits;

public class LoraGaTests
{
    static readonly string[] Targets = ["q_proj", "v_proj", "up_proj", "down_proj"];

    static LoraConfig Config(string init) => new() { R = 4, LoraAlpha = 8, TargetModules = Targets, InitLoraWeights = init, LoraGaConfig = init == "lora_ga" ? new LoraGaConfig() : null };

    [Fact]
    public void The_model_starts_unchanged_and_the_base_holds_the_residual()
    {
        using var scope = NewDisposeScope();
        var batches = Calib.Batches(4);
        manual_seed(1);
        var pm = PeftModel.Create(Calib.TinyLlama(), Config("lora_ga"));
        var before = Calib.Logits(pm, batches);
        var original = Calib.Layers(pm).ToDictionary(kv => kv.Key, kv => BaseLayers.WeightOutIn(kv.Value.BaseLayer).detach().clone());
        Calibration.Run(pm, batches);
        foreach (var (path, layer) in Calib.Layers(pm))
        {
            Assert.True(layer.B("default").detach().abs().max().item<float>() > 0, $"{path}: LoRA-GA's B starts nonzero");
            Numerics.Close(original[path], BaseLayers.WeightOutIn(layer.BaseLayer).detach() + layer.Scaling("default") * layer.LoraProduct("default").detach(), 1e-5, path);
        }
        Numerics.Close(before, Calib.Logits(pm, batches), 1e-4, "logits at step 0");
        Assert.All(pm.Base.named_parameters(), p => Assert.True(p.parameter.grad is null || p.parameter.requires_grad, $"'{p.name}' kept a calibration gradient"));
    }

    /// <summary>
    /// The point of LoRA-GA: the first gradient step of B A, -(dB A + B dA) = -s (G A^T A + B B^T G), points where full
    /// fine-tuning's step -G points. With A = V_r^T (and B's slice scaled small) that is G's best rank-r part, whose cosine
    /// with G is ||S_1..r|| / ||S||; with B = 0 (plain LoRA) it is G A^T A, G squeezed through a random projection.
    /// </summary>
    [Fact]
    public void The_first_update_of_BA_follows_the_full_gradient_far_better_than_a_random_init()
    {
        using var scope = NewDisposeScope();
        var batches = Calib.Batches(4);
        var (ga, best) = MeanAlignment("lora_ga", batches);
        var (plain, _) = MeanAlignment("true", batches);
        Assert.True(Math.Abs(ga - best) < 0.03, $"LoRA-GA's first update has cosine {ga:F3} with the full gradient; its top-{4} part has {best:F3}");
        Assert.True(ga > 2.5 * plain, $"LoRA-GA {ga:F3} against random-init LoRA {plain:F3}");
    }

    /// <returns>the mean over layers of cos(first update of B A, G), and of cos(G's top-r part, G).</returns>
    static (double Cosine, double Best) MeanAlignment(string init, List<Batch> batches)
    {
        manual_seed(1);
        var pm = PeftModel.Create(Calib.TinyLlama(), Config(init));
        if (init == "lora_ga") Calibration.Run(pm, batches);
        // The full gradient: of the loss with respect to each layer's whole weight W_res + s B A, at this point.
        var layers = Calib.Layers(pm).ToList();
        var weights = layers.Select(kv => BaseLayers.Weight(kv.Value.BaseLayer)).ToList();
        foreach (var w in weights) w.requires_grad = true;
        foreach (var b in batches) (Objectives.CausalLM(pm, b) / batches.Count).backward();
        double sum = 0, best = 0;
        foreach (var ((path, layer), w) in layers.Zip(weights))
        {
            var g = w.grad!.detach();
            var a = layer.A("default").detach();
            var b = layer.B("default").detach();
            sum += Calib.Cosine(layer.B("default").grad!.matmul(a) + b.matmul(layer.A("default").grad!), g);
            var s = linalg.svdvals(g.to(ScalarType.Float64));
            best += (s[..4].norm() / s.norm()).item<double>();
            w.requires_grad = false;
        }
        return (sum / layers.Count, best / layers.Count);
    }
}
