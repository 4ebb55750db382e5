using PeftSharp.Data;
using PeftSharp.Merging;
using PeftSharp.Models;
using PeftSharp.Training;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Combining;

/// <summary>
/// aTLAS on tiny Llamas. The target model generates the data; the base is the target plus noise; task vector "good" is
/// target - base (it helps), task vector "noise" is another draw of noise (it hurts).
/// </summary>
public class AtlasTests
{
    static (Dictionary<string, Tensor> Base, List<IReadOnlyDictionary<string, Tensor>> Taus, BatchSource Data) Toy(ScalarType dtype)
    {
        var target = TinyLlama.Weights(seed: 1);
        var baseWeights = TinyLlama.Noisy(target, 2, 0.3);
        var noise = TinyLlama.Noisy(target, 3, 0.3);
        var good = target.ToDictionary(kv => kv.Key, kv => (kv.Value - baseWeights[kv.Key]).to(dtype));
        var bad = noise.ToDictionary(kv => kv.Key, kv => (noise[kv.Key] - target[kv.Key]).to(dtype));
        using var model = TinyLlama.Load(target);
        var data = BatchSource.FromInputIds(TinyLlama.Sample(model, rows: 16, length: 12, seed: 4));
        return (baseWeights, [good, bad], data);
    }

    [Fact]
    public void The_coefficient_gradient_is_the_derivative_of_the_loss()
    {
        using var scope = NewDisposeScope();
        var (baseWeights, taus, data) = Toy(ScalarType.Float64);
        using var model = TinyLlama.Load(baseWeights, ScalarType.Float64);
        var batch = data.MicroBatch(data.EpochOrder(0, 0, shuffle: false), 0, 16);
        // next-token cross-entropy; the blocks' norms run in float32 even in a float64 model (as transformers' RMSNorm),
        // so the loss carries ~1e-7 of noise: a step of 1e-2 keeps it (and the O(h^2) error) under the tolerance
        Func<Batch, Tensor> loss = b =>
        {
            var logits = model.Forward(ModelInputs.Ids(b.InputIds));
            return nn.functional.cross_entropy(logits[.., ..^1].reshape(-1, TinyLlama.Vocab), b.InputIds[.., 1..].reshape(-1));
        };
        var lambdas = taus[0].Keys.ToDictionary(k => k, k => new[] { 0.3, -0.2 });
        var grad = Atlas.Gradients(model, taus, lambdas, batch, loss, out _);
        const double H = 1e-2;
        foreach (var name in new[] { "model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight", "lm_head.weight" })
            for (int t = 0; t < 2; t++)
            {
                double At(double delta)
                {
                    var moved = lambdas.ToDictionary(kv => kv.Key, kv => kv.Value.ToArray());
                    moved[name][t] += delta;
                    Atlas.Gradients(model, taus, moved, batch, loss, out double value);
                    return value;
                }
                double numeric = (At(H) - At(-H)) / (2 * H);
                Assert.True(Math.Abs(numeric - grad[name][t]) < 1e-3 + 1e-2 * Math.Abs(numeric), $"{name} task {t}: {grad[name][t]} vs {numeric}");
            }
        Assert.Equal(taus[0].Count, grad.Count);
    }

    [Fact]
    public void The_helpful_task_vector_gains_weight_the_harmful_one_loses_it_and_the_loss_drops()
    {
        using var scope = NewDisposeScope();
        var (baseWeights, taus, data) = Toy(ScalarType.Float32);
        using var model = TinyLlama.Load(baseWeights);
        var result = Atlas.LearnInPlace(model, taus, data, new AtlasOptions(Steps: 60, LearningRate: 0.05, BatchSize: 16, Initial: 0.3));

        double MeanOf(int t) => result.Coefficients.Values.Average(c => c[t]);
        // Measured: loss 5.18 -> 2.84 (below the 3.19 of the whole good vector at lambda 1: the scaling is per block),
        // mean coefficients 0.35 for the good vector and 0.05 for the noise, from 0.3 each.
        string seen = $"good {MeanOf(0)}, noise {MeanOf(1)}, loss {result.Losses[0]} -> {result.Losses[^1]}";
        Assert.True(MeanOf(0) > 0.3, seen);
        Assert.True(MeanOf(1) < 0.15, seen);
        Assert.True(result.Losses[^1] < 0.6 * result.Losses[0], seen);
        // the model holds base + sum_t lambda_t tau_t with the learned coefficients, block by block
        foreach (var (name, p) in model.named_parameters())
        {
            var c = result.Coefficients[name];
            var expected = baseWeights[name] + c[0] * taus[0][name] + c[1] * taus[1][name];
            Assert.True((p - expected).abs().max().item<float>() < 1e-5, name);
        }
    }
}
