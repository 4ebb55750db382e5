using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Training;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;
using AdamW = PeftSharp.Training.AdamW;
using Group = PeftSharp.Training.LoraPlus.Group;

namespace PeftSharp.Tests.Training.Optimizers;

/// <summary>LoRA+ groups parameters as PEFT's create_loraplus_optimizer does and scales each group's AdamW step.</summary>
public class LoraPlusTests
{
    [Fact]
    public void Groups_follow_PEFTs_rules_on_a_model_with_embeddings_biases_and_layer_norms()
    {
        var model = AutoModel.Load(Repo.Fixture("models", "tiny-gpt2"));
        var peft = PeftModel.Create(model, new LoraConfig { R = 4, TargetModules = ["wte", "c_attn"], Bias = "all", ModulesToSave = ["ln_f"] });
        var trainable = Methods.Trainable(peft, "causal_lm");
        var embedding = trainable.LowRankFactors.Where(f => f.Embedding).SelectMany(f => new[] { f.A, f.B }).ToHashSet();
        var groups = trainable.Parameters.ToDictionary(p => p.Name, p => LoraPlus.GroupOf(p.Name, p.P, embedding, trainable.NoDecay));

        // PEFT's rules, spelled out on the names: the embedding's factors; lora_B and other 1-D parameters, decayed unless a
        // bias or inside a LayerNorm; the rest.
        foreach (var (name, group) in groups)
        {
            var expected = name.Contains("lora_embedding_") ? Group.Embedding
                : name.EndsWith(".bias") || name.Contains("ln_f.modules_to_save") ? Group.BNoDecay
                : name.Contains("lora_B") ? Group.B
                : Group.A;
            Assert.True(expected == group, $"{name}: {group}, PEFT's group is {expected}");
        }
        Assert.Equal(Group.Embedding, groups["transformer.wte.lora_embedding_A.default"]);
        Assert.Equal(Group.Embedding, groups["transformer.wte.lora_embedding_B.default"]);
        Assert.Equal(Group.B, groups["transformer.h.0.attn.c_attn.lora_B.default.weight"]);
        Assert.Equal(Group.A, groups["transformer.h.0.attn.c_attn.lora_A.default.weight"]);
        Assert.Equal(Group.BNoDecay, groups["transformer.h.0.attn.c_attn.base_layer.bias"]);
        Assert.Equal(Group.BNoDecay, groups["transformer.ln_f.modules_to_save.default.weight"]);
        Assert.Equal(Group.BNoDecay, groups["transformer.h.0.mlp.c_fc.bias"]);
        Assert.All(Enum.GetValues<Group>(), g => Assert.Contains(g, groups.Values));

        var settings = LoraPlus.Settings(trainable, lrRatio: 8, lrEmbedding: 1e-6, baseLr: 1e-4, weightDecay: 0.1);
        Assert.Equal(new ParamSettings(1, 0.1), settings("transformer.h.0.attn.c_attn.lora_A.default.weight"));
        Assert.Equal(new ParamSettings(8, 0.1), settings("transformer.h.0.attn.c_attn.lora_B.default.weight"));
        Assert.Equal(new ParamSettings(8, 0), settings("transformer.h.0.attn.c_attn.base_layer.bias"));
        Assert.Equal(0.01, settings("transformer.wte.lora_embedding_B.default").LrScale, 12);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void One_step_moves_each_group_its_rate_over_AdamWs(bool fused)
    {
        // Adam's first step is lr * g / (|g| + eps): linear in lr, so LoRA+ must move B ratio times as far as AdamW at lr,
        // the embedding factors lr_embedding / lr times, and A exactly as far.
        const double lr = 1e-2, ratio = 4, lrEmbedding = 1e-3;
        var plain = new LowRankToy(1);
        var plus = plain.Clone();
        var start = plain.Clone();
        var options = new TrainingOptions { Optim = "loraplus", LoraplusLrRatio = ratio, LoraplusLrEmbedding = lrEmbedding, LearningRate = lr };
        using var adam = new AdamW(plain.Parameters, weightDecay: 0);
        using var loraPlus = LowRankOptimizers.Create(options, plus.Trainable() with { FixedParameterSet = fused });
        Assert.Equal(fused, loraPlus is FusedAdamW);
        foreach (var (toy, opt) in new[] { (plain, (IOptimizer)adam), (plus, loraPlus) })
        {
            opt.ZeroGrad();
            toy.Backward(0);
            opt.Step(lr);
        }
        foreach (var (name, factor) in new[] { (LowRankToy.LinA, 1.0), (LowRankToy.LinB, ratio), (LowRankToy.Bias, ratio),
                     (LowRankToy.EmbA, lrEmbedding / lr), (LowRankToy.EmbB, lrEmbedding / lr) })
        {
            using var moved = plus[name] - start[name];
            using var expected = (plain[name] - start[name]) * factor;
            Assert.True(expected.abs().max().item<float>() > 1e-5, $"{name} did not move");
            Numerics.Close(expected, moved, 1e-6 * Math.Max(1, factor), name);
        }
    }

    [Fact]
    public void A_resumed_run_takes_the_steps_of_a_straight_one() =>
        Resume.Check("loraplus");
}
