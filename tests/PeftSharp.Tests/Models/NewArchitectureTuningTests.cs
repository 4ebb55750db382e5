using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tuners;
using PeftSharp.Tuners.Bottleneck;
using PeftSharp.Tuners.LnTuning;
using PeftSharp.Tuners.IA3;
using PeftSharp.Tuners.LoHa;
using PeftSharp.Tuners.PrefixTuning;
using PeftSharp.Tuners.Lora;
using PeftSharp.Tests.Tuners;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Models;

/// <summary>Adapters on the new architectures: what all-linear picks, a few Adam steps, save and reload, merge, save merged.</summary>
[Collection(SerialRng.Name)]
public class NewArchitectureTuningTests(ITestOutputHelper output)
{
    public static readonly TheoryData<string, string> AllLinearTargets = new()
    {
        { "tiny-qwen3", "q_proj k_proj v_proj o_proj gate_proj up_proj down_proj" },
        { "tiny-gemma2", "q_proj k_proj v_proj o_proj gate_proj up_proj down_proj" },
        { "tiny-gemma3", "q_proj k_proj v_proj o_proj gate_proj up_proj down_proj" },
        { "tiny-phi3", "qkv_proj o_proj gate_up_proj down_proj" },
    };

    [Theory]
    [MemberData(nameof(AllLinearTargets))]
    public void Lora_on_all_linear_layers_trains_saves_reloads_merges_and_saves_merged(string name, string targets)
    {
        using var scope = NewDisposeScope();
        manual_seed(5);
        var folder = NewArchitectureParityTests.Folder(name);
        var pm = PeftModel.Create(AutoModel.Load(folder), new LoraConfig { R = 4, LoraAlpha = 8, TargetModules = ["all-linear"] });
        var wrapped = pm.Base.named_modules().Where(m => m.module is ITunerLayer).Select(m => m.name.Split('.')[^1]).Distinct();
        Assert.Equal(targets.Split(' ').Order(), wrapped.Order()); // the head (tied or not) and the norms are never targets

        var inputs = NewArchitectureParityTests.Inputs(name);
        var losses = MethodTrainingTests.Train(pm, inputs, steps: 6, lr: 2e-2);
        output.WriteLine($"{name}: losses {string.Join(", ", losses.Select(l => l.ToString("F4")))}");
        Assert.True(losses[^1] < losses[0] - 0.02, $"{name}: loss went {losses[0]:F4} -> {losses[^1]:F4}");

        pm.Base.eval();
        using var _ = no_grad();
        var trained = pm.Forward(inputs);
        Assert.True(Numerics.MaxAbsDiff(NewArchitectureParityTests.Expected(name, "logits"), trained) > 1e-3, "training changed nothing");
        var dir = IO.SafetensorsTests.TempDir();
        pm.Save(Path.Combine(dir, "adapter"));
        Numerics.Close(trained, PeftModel.FromPretrained(AutoModel.Load(folder), Path.Combine(dir, "adapter")).Forward(inputs), 1e-5, "reloaded");
        var merged = pm.MergeAndUnload();
        Numerics.Close(trained, merged.Forward(inputs), 1e-4, "merged");
        ModelSaving.SavePretrained(merged, folder, Path.Combine(dir, "merged"));
        Numerics.Close(trained, AutoModel.Load(Path.Combine(dir, "merged")).Forward(inputs), 1e-4, "merged, saved, loaded");
    }

    /// <summary>Other methods on Phi-3's fused projections and on Gemma 2's soft-capped logits.</summary>
    public static readonly TheoryData<string, string> Methods = new()
    {
        { "tiny-phi3", "ia3" }, { "tiny-phi3", "loha" }, { "tiny-phi3", "dora" },
        { "tiny-gemma2", "ia3" }, { "tiny-gemma3", "loha" }, { "tiny-qwen3", "dora" },
    };

    [Theory]
    [MemberData(nameof(Methods))]
    public void Other_methods_train_and_round_trip(string name, string method)
    {
        using var scope = NewDisposeScope();
        manual_seed(6);
        bool phi = name == "tiny-phi3";
        string attn = phi ? "qkv_proj" : "v_proj", up = phi ? "gate_up_proj" : "up_proj";
        PeftConfig config = method switch
        {
            "ia3" => new IA3Config { TargetModules = ModuleSelector.Of(attn, "down_proj"), FeedforwardModules = ModuleSelector.Of("down_proj") },
            "loha" => new LoHaConfig { R = 4, Alpha = 8, TargetModules = ModuleSelector.Of(attn, up) },
            "dora" => new LoraConfig { R = 4, LoraAlpha = 8, UseDora = true, TargetModules = ModuleSelector.Of(attn, "o_proj") },
            _ => throw new ArgumentException(method),
        };
        var folder = NewArchitectureParityTests.Folder(name);
        var pm = PeftModel.Create(AutoModel.Load(folder), config);
        var inputs = NewArchitectureParityTests.Inputs(name);
        var losses = MethodTrainingTests.Train(pm, inputs, steps: 6, lr: method == "ia3" ? 0.1 : 2e-2);
        output.WriteLine($"{name} {method}: losses {string.Join(", ", losses.Select(l => l.ToString("F4")))}");
        Assert.True(losses[^1] < losses[0] - 0.02, $"{name} {method}: loss went {losses[0]:F4} -> {losses[^1]:F4}");
        pm.Base.eval();
        using var _ = no_grad();
        var trained = pm.Forward(inputs);
        var dir = IO.SafetensorsTests.TempDir();
        pm.Save(dir);
        Numerics.Close(trained, PeftModel.FromPretrained(AutoModel.Load(folder), dir).Forward(inputs), 1e-5, "reloaded");
        pm.MergeAdapter();
        Numerics.Close(trained, pm.Forward(inputs), 1e-4, "merged");
    }

    /// <summary>Methods whose targets come from the model type (PEFT's mappings) find them in the new families.</summary>
    [Theory]
    [InlineData("tiny-gemma2", "ln_tuning", 3 * 4 + 1)]
    [InlineData("tiny-qwen3", "ln_tuning", 3)]
    [InlineData("tiny-phi3", "bottleneck", 2 * 2)]
    [InlineData("tiny-gemma3", "bottleneck", 4 * 2)]
    public void Default_placements_exist_in_the_new_families(string name, string method, int wrapped)
    {
        using var scope = NewDisposeScope();
        manual_seed(7);
        PeftConfig config = method == "ln_tuning" ? new LnTuningConfig { TaskType = "CAUSAL_LM" }
            : new BottleneckConfig { AdapterType = "sequential", Placement = "both", ReductionFactor = 4 };
        var pm = PeftModel.Create(AutoModel.Load(NewArchitectureParityTests.Folder(name)), config);
        Assert.Equal(wrapped, pm.Base.named_modules().Count(m => m.module is ITunerLayer));
        var inputs = NewArchitectureParityTests.Inputs(name);
        using (no_grad())
            Numerics.Close(NewArchitectureParityTests.Expected(name, "logits"), pm.Forward(inputs), 1e-4, "a fresh adapter starts as the identity");
        var losses = MethodTrainingTests.Train(pm, inputs, steps: 6, lr: 2e-2);
        Assert.True(losses[^1] < losses[0] - 0.02, $"{name} {method}: loss went {losses[0]:F4} -> {losses[^1]:F4}");
    }

    /// <summary>
    /// Virtual tokens reach the new attention paths: prefix keys through Gemma 2's eager, capped attention. Gemma's
    /// head_dim is not hidden / heads, so (as in PEFT) prefix tuning needs token_dim = heads * head_dim spelled out.
    /// </summary>
    [Theory]
    [InlineData("tiny-gemma2", "prefix")]
    [InlineData("tiny-gemma3", "prompt")]
    [InlineData("tiny-phi3", "prefix")]
    public void Prompt_learning_trains_on_the_new_families(string name, string method)
    {
        using var scope = NewDisposeScope();
        manual_seed(8);
        var config = name == "tiny-gemma2" ? new PrefixTuningConfig { NumVirtualTokens = 4, TokenDim = 4 * 16, TaskType = "CAUSAL_LM" }
            : PromptLearningBehaviourTests.Config(method);
        var pm = PeftModel.Create(AutoModel.Load(NewArchitectureParityTests.Folder(name)), config);
        TrainingLoop.AssertLearns(pm, TrainingLoop.Batch(vocab: 96), steps: 6, lr: 5e-2, virtualPositions: method == "prompt" ? 4 : 0);
    }

    /// <summary>Recomputed layers get their own kind's RoPE and mask (Gemma 3: local and global layers differ in both).</summary>
    [Fact]
    public void Gradient_checkpointing_gives_the_plain_gradients_on_gemma3()
    {
        (double, Dictionary<string, Tensor>) Run(bool checkpointing)
        {
            manual_seed(9);
            var pm = PeftModel.Create(AutoModel.Load(NewArchitectureParityTests.Folder("tiny-gemma3")), new LoraConfig { R = 4, TargetModules = ["all-linear"] });
            using (no_grad())
                foreach (var (n, p) in pm.TrainableParameters())
                    if (n.Contains("lora_B")) p.copy_(randn_like(p) * 0.1);
            pm.Base.train();
            pm.Base.GradientCheckpointing = checkpointing;
            var inputs = NewArchitectureParityTests.Inputs("tiny-gemma3");
            var loss = Losses.CausalLM(pm.Forward(inputs), inputs.InputIds!);
            loss.backward();
            return (loss.item<float>(), pm.TrainableParameters().ToDictionary(p => p.Name, p => p.P.grad!.detach().clone()));
        }
        var (plainLoss, plain) = Run(false);
        var (checkpointedLoss, checkpointed) = Run(true);
        Assert.Equal(plainLoss, checkpointedLoss, 6);
        foreach (var (n, g) in plain) Numerics.Close(g, checkpointed[n], 1e-5, n);
    }
}
