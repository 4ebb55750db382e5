using TorchSharp;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tuners;

/// <summary>
/// LoRA over a bfloat16 base computes in bfloat16 from float32 master weights (autocast's arithmetic without
/// autocast). Compared with the same weights run wholly in float32, it must agree to bfloat16 precision.
/// </summary>
[Collection(SerialRng.Name)]
public class LoraMixedPrecisionTests
{
    [Theory]
    [InlineData("tiny-llama")]
    [InlineData("tiny-gpt2")]
    public void Bf16_base_with_fp32_adapter_matches_fp32_arithmetic(string model)
    {
        var (lowLogits, lowGrads, low) = Run(model, ScalarType.BFloat16);
        var (refLogits, refGrads, _) = Run(model, ScalarType.Float32);

        Assert.All(low.TrainableParameters(), p => Assert.Equal(ScalarType.Float32, p.P.dtype));
        Assert.Equal(ScalarType.BFloat16, lowLogits.dtype);
        var scale = refLogits.abs().max().item<float>();
        Numerics.Close(refLogits, lowLogits, 0.03 * scale, "logits");
        foreach (var (name, g) in refGrads)
        {
            Assert.Equal(ScalarType.Float32, lowGrads[name].dtype);
            var cos = nn.functional.cosine_similarity(g.flatten(), lowGrads[name].flatten(), 0).item<float>();
            Assert.True(cos > 0.99, $"{name}: gradient cosine similarity {cos} between bf16 and fp32 arithmetic");
            var ratio = lowGrads[name].norm().item<float>() / g.norm().item<float>();
            Assert.InRange(ratio, 0.97, 1.03);
        }
    }

    // The base weights are rounded to bfloat16 in both runs, so only the arithmetic differs.
    static (Tensor Logits, Dictionary<string, Tensor> Grads, PeftModel Model) Run(string model, ScalarType dtype)
    {
        var m = AutoModel.Load(Repo.Fixture("models", model), ScalarType.BFloat16);
        if (dtype != ScalarType.BFloat16) m.to(dtype);
        manual_seed(21);
        var pm = PeftModel.Create(m, new LoraConfig { R = 4, LoraAlpha = 16, TargetModules = ["all-linear"] });
        using (no_grad())
            foreach (var (name, p) in pm.TrainableParameters())
                if (name.Contains("lora_B")) p.copy_(randn_like(p) * 0.05);
        pm.Base.train(true);
        var ids = randint(0, m.Config.VocabSize, [2, 8], dtype: ScalarType.Int64, generator: new Generator(3));
        var logits = pm.Forward(ModelInputs.Ids(ids));
        Losses.CausalLM(logits, ids).backward();
        return (logits.detach(), pm.TrainableParameters().ToDictionary(p => p.Name, p => p.P.grad!.detach().clone()), pm);
    }
}
