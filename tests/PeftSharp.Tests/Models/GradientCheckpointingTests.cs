using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Models;

/// <summary>Recomputing layers in backward must give the gradients that keeping their activations gives.</summary>
[Collection(SerialRng.Name)]
public class GradientCheckpointingTests
{
    [Theory]
    [InlineData("tiny-llama")]
    [InlineData("tiny-gpt2")]
    public void Checkpointed_gradients_equal_plain_ones_with_dropout_on(string model)
    {
        var plain = LossAndGradients(model, checkpointing: false);
        var checkpointed = LossAndGradients(model, checkpointing: true);

        Assert.Equal(plain.Loss, checkpointed.Loss, 6);
        Assert.Equal(plain.Grads.Keys.Order(), checkpointed.Grads.Keys.Order());
        foreach (var (name, g) in plain.Grads)
        {
            Assert.True(g.abs().max().item<float>() > 0, $"{name}: gradient is zero, the comparison would prove nothing");
            Numerics.Close(g, checkpointed.Grads[name], 1e-5, name);
        }
    }

    [Fact]
    public void Checkpointing_is_inactive_without_gradients_and_leaves_the_generator_as_plain_running_does()
    {
        var pm = NewLora("tiny-llama", seed: 3);
        var ids = randint(0, pm.Base.Config.VocabSize, [2, 7], dtype: ScalarType.Int64);
        pm.Base.GradientCheckpointing = true;
        using (no_grad())
        {
            manual_seed(2);
            var a = pm.Forward(ModelInputs.Ids(ids));
            pm.Base.GradientCheckpointing = false;
            manual_seed(2);
            var b = pm.Forward(ModelInputs.Ids(ids));
            Numerics.Close(a, b, 0, "logits");
        }

        // Dropout after the blocks must draw the same numbers whether or not the blocks were recomputed.
        pm.Base.GradientCheckpointing = true;
        manual_seed(5);
        Objectives(pm, ids).backward();
        var afterCheckpointed = rand(4);
        pm.Base.GradientCheckpointing = false;
        manual_seed(5);
        Objectives(pm, ids).backward();
        var afterPlain = rand(4);
        Numerics.Close(afterPlain, afterCheckpointed, 0, "generator state after a step");
    }

    [Fact]
    public void Bert_says_it_has_no_checkpointing()
    {
        var bert = AutoModel.Load(Repo.Fixture("models", "tiny-bert-cls"));
        var e = Assert.Throws<NotSupportedException>(() => bert.GradientCheckpointing = true);
        Assert.Contains("BertForSequenceClassification", e.Message);
    }

    static (double Loss, Dictionary<string, Tensor> Grads) LossAndGradients(string model, bool checkpointing)
    {
        var pm = NewLora(model, seed: 11);
        pm.Base.GradientCheckpointing = checkpointing;
        var ids = randint(0, pm.Base.Config.VocabSize, [2, 9], dtype: ScalarType.Int64);
        manual_seed(1234); // the dropout masks
        var loss = Objectives(pm, ids);
        loss.backward();
        var grads = pm.TrainableParameters().ToDictionary(p => p.Name, p => p.P.grad!.detach().clone());
        return (loss.item<float>(), grads);
    }

    static Tensor Objectives(PeftModel pm, Tensor ids) =>
        PeftSharp.Training.Objectives.CausalLM(pm, new PeftSharp.Data.Batch(ids, ids, ones_like(ids), null, null, null, ids.numel(), ids.numel()));

    // LoRA with dropout on, and B made non-zero so that every adapter weight gets a gradient.
    static PeftModel NewLora(string model, long seed)
    {
        manual_seed(seed);
        var pm = PeftModel.Create(AutoModel.Load(Repo.Fixture("models", model)),
            new LoraConfig { R = 4, LoraAlpha = 8, LoraDropout = 0.3, TargetModules = ["all-linear"] });
        using (no_grad())
            foreach (var (name, p) in pm.TrainableParameters())
                if (name.Contains("lora_B")) p.copy_(randn_like(p) * 0.1);
        pm.Base.train(true);
        return pm;
    }
}
