using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tuners;
using PeftSharp.Tuners.AdaLora;
using PeftSharp.Tuners.IA3;
using PeftSharp.Tuners.LoHa;
using PeftSharp.Tuners.LoKr;
using PeftSharp.Tuners.Miss;
using PeftSharp.Tuners.Vera;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tuners;

/// <summary>Fresh adapters of every method on tiny-llama: a few Adam steps lower the loss; what trained saves and loads back.</summary>
public class MethodTrainingTests(ITestOutputHelper output)
{
    // Learning rates are high because the runs are short: six steps must show the loss going down.
    static readonly Dictionary<string, (Func<PeftConfig> Config, double Lr)> Configs = new()
    {
        ["ia3"] = (() => new IA3Config { TargetModules = ModuleSelector.Of("k_proj", "v_proj", "down_proj"), FeedforwardModules = ModuleSelector.Of("down_proj") }, 0.1),
        ["loha"] = (() => new LoHaConfig { R = 4, Alpha = 8, TargetModules = ModuleSelector.Of("q_proj", "v_proj") }, 2e-2),
        ["lokr"] = (() => new LoKrConfig { R = 2, Alpha = 4, TargetModules = ModuleSelector.Of("q_proj", "v_proj", "down_proj"), DecomposeBoth = true }, 5e-2),
        ["vera"] = (() => new VeraConfig { R = 16, TargetModules = ModuleSelector.Of("q_proj", "v_proj", "o_proj", "down_proj"), ProjectionPrngKey = 7 }, 5e-2),
        ["adalora"] = (() => new AdaLoraConfig { InitR = 6, TargetR = 2, LoraAlpha = 8, TargetModules = ModuleSelector.Of("q_proj", "v_proj", "gate_proj") }, 5e-2),
        ["miss"] = (() => new MissConfig { R = 8, TargetModules = ModuleSelector.Of("q_proj", "v_proj", "down_proj") }, 1e-2),
        ["miss-bat"] = (() => new MissConfig { R = 8, InitWeights = "bat", TargetModules = ModuleSelector.Of("q_proj", "v_proj", "down_proj") }, 1e-2),
    };

    public static TheoryData<string> Cases => new(Configs.Keys);

    [Theory]
    [MemberData(nameof(Cases))]
    public void A_few_adam_steps_lower_the_loss_and_the_result_round_trips(string method)
    {
        using var scope = NewDisposeScope();
        manual_seed(1);
        var f = new AdapterFixture("llama-lora-qv"); // for the tiny-llama base and its inputs
        var pm = PeftModel.Create(f.LoadBase(), Configs[method].Config());
        var inputs = f.Inputs();
        using (no_grad())
        using (pm.DisableAdapters())
            Numerics.Close(BaseLogits(), pm.Forward(inputs), 1e-4, "a fresh adapter starts as the identity");

        var losses = Train(pm, inputs, steps: 6, lr: Configs[method].Lr);
        output.WriteLine($"{method}: losses {string.Join(", ", losses.Select(l => l.ToString("F4")))}");
        Assert.True(losses[^1] < losses[0] - 0.02, $"{method}: loss went {losses[0]:F4} -> {losses[^1]:F4}");

        pm.Base.eval();
        using var _ = no_grad();
        var trained = pm.Forward(inputs);
        var dir = Path.Combine(IO.SafetensorsTests.TempDir(), method);
        pm.Save(dir);
        var back = PeftModel.FromPretrained(f.LoadBase(), dir);
        Numerics.Close(trained, back.Forward(inputs), 1e-5, "loaded back");
        pm.MergeAdapter();
        Numerics.Close(trained, pm.Forward(inputs), 1e-4, "merged");
    }

    /// <summary>Runs <paramref name="steps"/> Adam steps on the causal LM loss of <paramref name="inputs"/>; returns each step's loss.</summary>
    internal static List<double> Train(PeftModel pm, ModelInputs inputs, int steps, double lr, Action<PeftModel, int>? afterBackward = null,
        Func<PeftModel, Tensor>? extraLoss = null)
    {
        var labels = inputs.InputIds!.masked_fill(inputs.AttentionMask!.eq(0), Losses.IgnoreIndex);
        var parameters = pm.TrainableParameters().Select(p => p.P).ToList();
        Assert.NotEmpty(parameters);
        using var opt = optim.Adam(parameters, lr);
        pm.Base.train();
        var losses = new List<double>();
        for (int step = 0; step < steps; step++)
        {
            using var stepScope = NewDisposeScope();
            opt.zero_grad();
            var loss = Losses.CausalLM(pm.Forward(inputs), labels);
            losses.Add(loss.item<float>());
            if (extraLoss is not null) loss = loss + extraLoss(pm);
            loss.backward();
            opt.step();
            afterBackward?.Invoke(pm, step);
        }
        pm.Base.eval();
        return losses;
    }

    internal static Tensor BaseLogits()
    {
        using var f = IO_Open(Repo.Fixture("models", "tiny-llama", "expected.safetensors"));
        return f.Load("logits");
    }

    static PeftSharp.IO.SafetensorsFile IO_Open(string path) => PeftSharp.IO.SafetensorsFile.Open(path);
}
