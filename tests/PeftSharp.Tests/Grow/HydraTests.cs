using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tuners;
using PeftSharp.Tuners.Hydra;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Grow;

public class HydraTests
{
    static ModuleSelector Targets(params string[] names) => ModuleSelector.Of(names);

    /// <summary>Every Hydra layer of a model with random B and B' (so both branches count) and its base weight and bias.</summary>
    static PeftModel Random(string model, params string[] targets)
    {
        manual_seed(5);
        var pm = PeftModel.Create(AutoModel.Load(Repo.Fixture("models", model)),
            new HydraConfig { R = 3, LoraAlpha = 6, InitLoraWeights = false, TargetModules = Targets(targets) });
        pm.Base.eval();
        // The fixtures' biases are zero; make them count, so that the sequential branch's W0 x (without b) is checked.
        using (no_grad())
            foreach (var (_, l) in pm.TunerLayers())
                BaseLayers.Bias(l.BaseLayer)?.copy_(randn(BaseLayers.Bias(l.BaseLayer)!.shape) * 0.5);
        return pm;
    }

    // h = W0 x + b + s B A x + s B' A' (W0 x), written with plain tensor ops from the saved tensors.
    static Tensor Equation(HydraLayer layer, Tensor x)
    {
        var t = layer.StateDict("default").ToDictionary(kv => kv.Key, kv => kv.Value.detach());
        var w0 = BaseLayers.WeightOutIn(layer.BaseLayer).detach();                  // [out, in]
        var bias = BaseLayers.Bias(layer.BaseLayer)?.detach();
        var w0x = matmul(x, w0.t());
        var s = layer.Scaling("default");
        var parallel = matmul(matmul(x, t["lora_A.weight"].t()), t["lora_B.weight"].t());
        var sequential = matmul(matmul(w0x, t["lora_seq_A.weight"].t()), t["lora_seq_B.weight"].t());
        var h = w0x + s * parallel + s * sequential;
        return bias is null ? h : h + bias;
    }

    [Theory]
    [InlineData("tiny-llama", "q_proj", "down_proj")]   // Linear, no bias
    [InlineData("tiny-gpt2", "c_attn", "c_fc")]         // Conv1D with bias: the sequential branch reads W0 x without it
    public void The_forward_is_the_equation(string model, string first, string second)
    {
        using var scope = NewDisposeScope();
        var pm = Random(model, first, second);
        var layers = pm.TunerLayers().Select(l => (HydraLayer)l.Layer).ToList();
        Assert.NotEmpty(layers);
        using var _ = no_grad();
        foreach (var layer in layers.Take(3))
        {
            var x = randn(2, 5, layer.InFeatures, generator: new Generator(9));
            var expected = Equation(layer, x);
            Numerics.Close(expected, layer.call(x), 2e-5, model);
            // And the branch is real: without it the output differs by far more than the tolerance.
            Assert.True(Numerics.MaxAbsDiff(expected, ((nn.Module<Tensor, Tensor>)layer.BaseLayer).call(x)) > 1e-2);
        }
    }

    [Theory]
    [InlineData("tiny-llama", "q_proj", "v_proj")]
    [InlineData("tiny-gpt2", "c_attn", "c_proj")]
    public void Merged_logits_equal_the_unmerged_and_unmerging_is_exact(string model, string first, string second)
    {
        using var scope = NewDisposeScope();
        var pm = Random(model, first, second);
        var ids = randint(2, 500, [2, 12], generator: new Generator(3));
        using var _ = no_grad();
        var before = BaseLayers.Weight(pm.TunerLayers().First().Layer.BaseLayer).detach().clone();
        var unmerged = pm.Forward(ModelInputs.Ids(ids));
        pm.MergeAdapter();
        var merged = pm.Forward(ModelInputs.Ids(ids));
        Numerics.Close(unmerged, merged, 1e-4, "merged vs unmerged");
        Assert.True(Numerics.MaxAbsDiff(before, BaseLayers.Weight(pm.TunerLayers().First().Layer.BaseLayer).detach()) > 1e-4, "the merge must change W0");
        pm.UnmergeAdapter();
        Assert.True(Numerics.Same(before, BaseLayers.Weight(pm.TunerLayers().First().Layer.BaseLayer).detach()), "unmerge restores W0 bit for bit");
        Assert.True(Numerics.Same(unmerged, pm.Forward(ModelInputs.Ids(ids))), "and the unmerged forward");
    }

    [Fact]
    public void A_saved_adapter_loads_back_with_the_same_logits()
    {
        using var scope = NewDisposeScope();
        var pm = Random("tiny-llama", "q_proj", "v_proj");
        var dir = Path.Combine(Tests.IO.SafetensorsTests.TempDir(), "hydra-save");
        pm.Save(dir);
        Assert.Contains("\"HYDRA\"", File.ReadAllText(Path.Combine(dir, "adapter_config.json")));
        var back = PeftModel.FromPretrained(AutoModel.Load(Repo.Fixture("models", "tiny-llama")), dir);
        back.Base.eval();
        var ids = randint(2, 500, [2, 12], generator: new Generator(4));
        using var _ = no_grad();
        Assert.True(Numerics.Same(pm.Forward(ModelInputs.Ids(ids)), back.Forward(ModelInputs.Ids(ids))));
    }
}
