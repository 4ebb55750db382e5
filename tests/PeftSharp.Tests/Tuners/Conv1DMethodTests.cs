using PeftSharp.Peft;
using PeftSharp.Tuners;
using PeftSharp.Tuners.AdaLora;
using PeftSharp.Tuners.IA3;
using PeftSharp.Tuners.Vera;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tuners;

/// <summary>Methods that PEFT also applies to GPT-2's Conv1D (weight stored [in, out]): merging must respect the layout.</summary>
public class Conv1DMethodTests
{
    public static TheoryData<string> Methods => new() { "ia3", "vera", "adalora" };

    static PeftConfig Config(string method) => method switch
    {
        "ia3" => new IA3Config { TargetModules = ModuleSelector.Of("c_attn", "c_fc", "mlp.c_proj"), FeedforwardModules = ModuleSelector.Of("mlp.c_proj"), InitIa3Weights = false, FanInFanOut = true },
        "vera" => new VeraConfig { R = 4, TargetModules = ModuleSelector.Of("c_attn", "c_fc"), InitWeights = false, FanInFanOut = true },
        _ => new AdaLoraConfig { InitR = 4, TargetModules = ModuleSelector.Of("c_attn", "c_fc"), InitLoraWeights = false, FanInFanOut = true },
    };

    [Theory]
    [MemberData(nameof(Methods))]
    public void Merging_into_conv1d_keeps_the_logits(string method)
    {
        using var scope = NewDisposeScope();
        manual_seed(5);
        var f = new AdapterFixture("gpt2-lora-conv1d");
        var pm = PeftModel.Create(f.LoadBase(), Config(method));
        if (pm.Configs["default"] is AdaLoraConfig)
            using (no_grad())
                foreach (var (_, l) in pm.TunerLayers()) ((AdaLoraLayer)l).E("default").mul_(0.05); // randn everywhere is too strong for a test
        using var _ = no_grad();
        var inputs = f.Inputs();
        var unmerged = pm.Forward(inputs);
        using (pm.DisableAdapters())
            Assert.True(Numerics.MaxAbsDiff(pm.Forward(inputs), unmerged) > 1e-3, "the adapter must change the logits");
        var merged = pm.MergeAndUnload(safeMerge: true);
        Numerics.Close(unmerged, merged.Forward(inputs), 1e-4, method);
    }
}
