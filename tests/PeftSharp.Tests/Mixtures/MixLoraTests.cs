using PeftSharp.Data;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tests.Tuners;
using PeftSharp.Training;
using PeftSharp.Tuners;
using PeftSharp.Tuners.MixLora;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Mixtures;

/// <summary>MixLoRA: the mixture and the load-balancing loss against their equations written out, and what the loss does.</summary>
[Collection(SerialRng.Name)]
public class MixLoraTests
{
    static PeftModel Create(MixLoraConfig c)
    {
        manual_seed(3);
        var m = AutoModel.Load(Repo.Fixture("models", "tiny-llama"));
        m.eval();
        return PeftModel.Create(m, c);
    }

    [Fact]
    public void Aux_loss_is_E_times_the_sum_over_picks_of_token_share_times_mean_probability()
    {
        using var scope = NewDisposeScope();
        manual_seed(4);
        const int n = 40, experts = 5, k = 2;
        var logits = randn(n, experts) * 2;
        var p = logits.softmax(-1).to(ScalarType.Float64).data<double>().ToArray();
        var share = new double[k, experts];
        var meanProb = new double[experts];
        for (int t = 0; t < n; t++)
        {
            var order = Enumerable.Range(0, experts).OrderByDescending(e => p[t * experts + e]).ToArray();
            for (int j = 0; j < k; j++) share[j, order[j]] += 1.0 / n;
            for (int e = 0; e < experts; e++) meanProb[e] += p[t * experts + e] / n;
        }
        double expected = 0;
        for (int j = 0; j < k; j++)
            for (int e = 0; e < experts; e++) expected += share[j, e] * meanProb[e];
        expected *= experts;
        Assert.Equal(expected, LoadBalancing.Loss(logits, k).item<float>(), 5);
    }

    [Fact]
    public void The_forward_is_the_renormalised_top_k_mixture_of_lora_experts()
    {
        using var scope = NewDisposeScope();
        var pm = Create(new MixLoraConfig { R = 2, LoraAlpha = 6, NumExperts = 3, TopK = 2, TargetModules = ModuleSelector.Of("gate_proj", "down_proj") });
        using var _ = no_grad();
        foreach (var (_, p) in pm.TrainableParameters()) p.add_(randn_like(p) * 0.3);
        var moe = pm.TunerLayers().Select(x => x.Layer).OfType<MixLoraMoe>().First();
        var sd = ((ITunerLayer)moe).StateDict("default").ToDictionary(kv => kv.Key, kv => kv.Value);
        var ffn = moe.BaseLayer.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter);
        var x = randn(2, 3, 64);
        var actual = ((nn.Module<Tensor, Tensor>)moe).call(x);

        Tensor Lora(string proj, int e, Tensor v) =>
            sd.TryGetValue($"mixlora_experts.{e}.{proj}.lora_A.weight", out var a) ? v.matmul(a.t()).matmul(sd[$"mixlora_experts.{e}.{proj}.lora_B.weight"].t()) * 3.0 : zeros(1);
        var rows = new List<Tensor>();
        foreach (var token in x.reshape(-1, 64).unbind(0))
        {
            var probs = token.matmul(sd["mixlora_gate.weight"].t()).softmax(-1);
            var (w, picked) = probs.topk(2);
            w = w / w.sum();
            var y = zeros(64);
            for (int j = 0; j < 2; j++)
            {
                int e = (int)picked[j].item<long>();
                var g = token.matmul(ffn["gate_proj.weight"].t()) + Lora("gate_proj", e, token);
                var u = token.matmul(ffn["up_proj.weight"].t());
                var h = nn.functional.silu(g) * u;
                y = y + w[j] * (h.matmul(ffn["down_proj.weight"].t()) + Lora("down_proj", e, h));
            }
            rows.Add(y);
        }
        Numerics.Close(stack(rows).reshape(2, 3, 64), actual, 1e-5, "mixture");
    }

    /// <summary>
    /// One feed-forward block of tiny-llama as a MixLoRA layer, on 64 tokens that share a direction c. The router starts
    /// out sending every token to experts 0 and 1 (their rows pushed along c), and trains for 30 steps on a task loss
    /// (match the plain FFN's output, which fresh experts already do) plus, or not, the load-balancing loss.
    /// </summary>
    static float[] UsageAfterTraining(bool auxLoss)
    {
        var pm = Create(new MixLoraConfig { R = 2, NumExperts = 4, TopK = 2, TargetModules = ModuleSelector.Of("gate_proj", "up_proj", "down_proj") });
        var moe = pm.TunerLayers().Select(x => x.Layer).OfType<MixLoraMoe>().First();
        var layer = (nn.Module<Tensor, Tensor>)moe;
        var gate = (TorchSharp.Modules.Parameter)moe.StateDict("default").First().Value;
        manual_seed(8);
        var c = randn(64);
        var x = (c + 0.3 * randn(64, 64)).unsqueeze(0);                       // [1, 64 tokens, 64]
        Tensor target;
        using (no_grad())
        {
            target = ((nn.Module<Tensor, Tensor>)moe.BaseLayer).call(x);
            gate[0].add_(c * (3 / c.square().sum()));
            gate[1].add_(c * (3 / c.square().sum()));
        }
        using var opt = optim.Adam([gate], 5e-2);
        pm.Base.train();
        for (int step = 0; step < 30; step++)
        {
            using var s = NewDisposeScope();
            opt.zero_grad();
            var loss = (layer.call(x) - target).square().mean();
            var logits = moe.TakeRouterLogits("default")!;
            if (auxLoss) loss = loss + LoadBalancing.Loss(logits, 2);
            loss.backward();
            opt.step();
        }
        pm.Base.eval();
        var usage = zeros(4);
        pm.Routing.Observer = (_, _, w) => usage.add_(w.gt(0).sum([0]).to(ScalarType.Float32));
        using (no_grad()) layer.call(x);
        return (usage / usage.sum()).data<float>().ToArray();
    }

    [Fact]
    public void With_the_aux_loss_expert_usage_is_balanced_and_without_it_is_not()
    {
        using var scope = NewDisposeScope();
        var balanced = UsageAfterTraining(auxLoss: true);
        var plain = UsageAfterTraining(auxLoss: false);
        Console.WriteLine($"usage with aux loss: {string.Join(", ", balanced.Select(u => u.ToString("F3")))}; without: {string.Join(", ", plain.Select(u => u.ToString("F3")))}");
        // Balanced is 0.25 each (tokens × top-2 picks over 4 experts); the biased start is 0.5, 0.5, 0, 0.
        Assert.True(balanced.All(u => Math.Abs(u - 0.25) <= 0.1), $"with the aux loss every expert's share must be 0.25 ± 0.1: {string.Join(", ", balanced)}");
        Assert.True(plain[2] + plain[3] <= 0.05, $"without the aux loss experts 2 and 3 stay (nearly) unused: {string.Join(", ", plain)}");
    }

    [Fact]
    public void The_aux_loss_reaches_training_only_through_the_hook_and_only_in_training()
    {
        using var scope = NewDisposeScope();
        var pm = Create(new MixLoraConfig { R = 2, NumExperts = 4, TopK = 2, RouterAuxLossCoef = 0.5, TargetModules = ModuleSelector.Of("q_proj", "down_proj") });
        var batch = BatchSource.FromInputIds(TrainingLoop.Batch(seed: 7)).MicroBatch([0, 1], 0, 2);
        var plain = Objectives.ForPeft(pm);
        var withAux = Methods.Trainable(pm, "causal_lm");
        pm.Base.eval();
        Assert.Equal(plain.ComputeLoss(batch).item<float>(), withAux.ComputeLoss(batch).item<float>());
        pm.Base.train();
        // The LM loss alone, then (with no dropout) the same forward plus 0.5 · the balancing loss of its router logits.
        var lm = plain.ComputeLoss(batch).item<float>();
        var logits = cat(pm.TunerLayers().Select(x => x.Layer).OfType<MixLoraMoe>().Select(m => m.TakeRouterLogits("default")!).ToList(), 0);
        var total = withAux.ComputeLoss(batch).item<float>();
        Assert.Equal(lm + 0.5 * LoadBalancing.Loss(logits, 2).item<float>(), total, 5);
    }
}
