using PeftSharp.Data;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Training;
using PeftSharp.Tuners;
using PeftSharp.Tuners.SparseFt;
using PeftSharp.Tuners.SparseFt.Graft;
using TorchSharp;
using static TorchSharp.torch;
using static PeftSharp.Tests.SparseFt.SparseFtRig;

namespace PeftSharp.Tests.SparseFt;

/// <summary>Grafting finds the few weights that carry a fine-tuned skill, where the largest movements do not.</summary>
[Collection(SerialRng.Name)]
public class GraftingTests
{
    // The base: tiny-llama with key/value head 1's rows of v_proj zeroed, so o_proj's columns 32..63 (query heads 2
    // and 3, which read that head) only ever see zeros: a change there cannot matter.
    static PretrainedModel Base()
    {
        var m = TinyLlama();
        using (no_grad())
            foreach (var (n, p) in m.named_parameters())
                if (n.EndsWith("v_proj.weight")) p[16.., ..].zero_();
        return m;
    }

    static double Loss(ILanguageModel m, Tensor ids)
    {
        using var _ = no_grad();
        return Losses.CausalLM(m.Forward(ModelInputs.Ids(ids)), ids).item<float>();
    }

    [Fact]
    public void The_learned_graft_recovers_most_of_the_fine_tuned_loss_where_the_largest_movements_recover_none()
    {
        using var scope = NewDisposeScope();
        using var g = new Generator(11);
        var ids = randint(2, 10, [8, 12], generator: g);   // a task the skill can learn: tokens from a small set
        var data = BatchSource.FromInputIds(ids);
        var o = ModuleSelector.Of("o_proj");
        // The skill: a sparse fine-tune of 5% of o_proj on the task rows.
        var skill = Create(new SparseFtConfig { Method = "random-mask", Density = 0.05, RandomSeed = 4, TargetModules = o }, Base());
        Trainer.Run(Methods.Trainable(skill, "causal_lm"), data, null, Options(30) with { LearningRate = 0.1, PerDeviceTrainBatchSize = 8 },
            new TrainerHooks { HandleCtrlC = false });
        // The fine-tuned model: base + the skill + a larger noisy change on the columns that cannot matter.
        var tuned = Base();
        var weights = tuned.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        using (no_grad())
            foreach (var t in SparseFtTuner.Targets(skill, "default"))
            {
                var w = weights[t.Path + ".weight"];
                w.add_(t.Delta.ToDense());
                w[.., 32..].add_(randn(64, 32, generator: g) * 3 * t.Delta.Values.abs().max());
            }
        double baseLoss = Loss(Base(), ids), tunedLoss = Loss(tuned, ids), gap = baseLoss - tunedLoss;
        Assert.True(gap > 0.3, $"the skill must matter: base {baseLoss:F4}, fine-tuned {tunedLoss:F4}");
        var options = new GraftOptions { Density = 0.06, TargetModules = o, Steps = 30, BatchSize = 8 };

        // The start, the top-K of |θ_ft − θ_pre|, is all noise: it recovers nothing.
        var start = Grafting.Learn(Base(), tuned, data, options with { Steps = 0 });
        Assert.True(baseLoss - Loss(start, ids) < 0.1 * gap, $"start {Loss(start, ids):F4}, base {baseLoss:F4}");

        var graft = Grafting.Learn(Base(), tuned, data, options);
        var graftLoss = Loss(graft, ids);
        Assert.True(baseLoss - graftLoss > 0.75 * gap, $"graft {graftLoss:F4}, base {baseLoss:F4}, fine-tuned {tunedLoss:F4}");
        // The graft is the fine-tuned values on K entries per weight, and nothing else.
        foreach (var t in SparseFtTuner.Targets(graft, "default"))
        {
            Assert.Equal(SparseWeightDelta.Budget(0.06, 4096), Set(t.Delta.Indices).Count);
            var expected = (weights[t.Path + ".weight"].detach() - t.Weight.detach()).flatten().index_select(0, t.Delta.Indices);
            Assert.True(Numerics.Same(expected, t.Delta.Values.detach()), t.Path);
            Assert.Null(t.Delta.Probe);
        }
    }
}
