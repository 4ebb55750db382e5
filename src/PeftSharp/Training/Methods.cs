using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tuners;
using PeftSharp.Tuners.AdaLora;
using PeftSharp.Tuners.BitFit;
using PeftSharp.Tuners.Bottleneck;
using PeftSharp.Tuners.IA3;
using PeftSharp.Tuners.LnTuning;
using PeftSharp.Tuners.LoHa;
using PeftSharp.Tuners.LoKr;
using PeftSharp.Tuners.Lora;
using PeftSharp.Tuners.Miss;
using PeftSharp.Tuners.PrefixTuning;
using PeftSharp.Tuners.PromptTuning;
using PeftSharp.Tuners.PTuning;
using PeftSharp.Tuners.Ssf;
using PeftSharp.Tuners.Vera;

namespace PeftSharp.Training;

/// <summary>
/// <c>--method NAME</c>: the adapter config each method gets from the training options (rank, alpha, targets, task),
/// with each method's usual defaults for the rest. Set options in a config file's own adapter_config to go further.
/// </summary>
public static class Methods
{
    public static readonly string[] Names =
        ["lora", "dora", "rslora", "pissa", "olora", "ia3", "loha", "lokr", "vera", "adalora", "miss", "bone",
         "prompt_tuning", "prefix_tuning", "p_tuning", "ln_tuning", "bottleneck", "parallel_adapter", "ssf", "bitfit"];

    /// <param name="totalSteps">the run's optimizer steps (AdaLoRA schedules its rank budget over them).</param>
    public static PeftConfig ConfigFor(TrainingOptions o, ModelConfig model, int totalSteps)
    {
        var task = o.Task == "seq_cls" ? "SEQ_CLS" : "CAUSAL_LM";
        var allLinear = o.LoraTargetModules is ["all-linear"];
        ModuleSelector targets = ModuleSelector.Of(o.LoraTargetModules);
        ModuleSelector Attn() => allLinear ? ModuleSelector.Of(AttentionNames(model)) : targets;
        var lora = new LoraConfig
        {
            R = o.LoraR, LoraAlpha = o.LoraAlpha, LoraDropout = o.LoraDropout, UseRslora = o.UseRslora, UseDora = o.UseDora,
            TargetModules = targets, TaskType = task, BaseModelNameOrPath = o.Model,
        };
        return o.Method.ToLowerInvariant() switch
        {
            "lora" => lora,
            "dora" => lora with { UseDora = true },
            "rslora" => lora with { UseRslora = true },
            "pissa" => lora with { InitLoraWeights = "pissa_niter_4" },
            "olora" => lora with { InitLoraWeights = "olora" },
            "ia3" => IA3(model, task),
            "loha" => new LoHaConfig { R = o.LoraR, Alpha = o.LoraAlpha, TargetModules = targets, TaskType = task },
            "lokr" => new LoKrConfig { R = o.LoraR, Alpha = o.LoraAlpha, TargetModules = targets, TaskType = task },
            "vera" => new VeraConfig { R = Math.Max(o.LoraR, 64), TargetModules = Attn(), TaskType = task },
            "adalora" => new AdaLoraConfig
            {
                InitR = Math.Max(o.LoraR * 3 / 2, 2), TargetR = o.LoraR, LoraAlpha = o.LoraAlpha, TargetModules = Attn(), TaskType = task,
                TotalStep = totalSteps, Tinit = totalSteps / 10, Tfinal = totalSteps / 5, DeltaT = 1,
            },
            "miss" or "bone" => new MissConfig { R = Math.Min(64, model.HiddenSize / 4), TargetModules = Attn(), TaskType = task },
            "prompt_tuning" => new PromptTuningConfig { NumVirtualTokens = 16, TaskType = task },
            "prefix_tuning" => new PrefixTuningConfig { NumVirtualTokens = 16, TaskType = task },
            "p_tuning" => new PromptEncoderConfig { NumVirtualTokens = 16, EncoderHiddenSize = model.HiddenSize, TaskType = task },
            "ln_tuning" => new LnTuningConfig { TaskType = task },
            "bottleneck" => new BottleneckConfig { AdapterType = "sequential", TaskType = task },
            "parallel_adapter" => new BottleneckConfig { AdapterType = "parallel", Scaling = 4.0, TaskType = task },
            "ssf" => new SsfConfig { TargetModules = allLinear ? ModuleSelector.Pattern(".*_proj|.*c_attn|.*c_fc|.*c_proj|.*dense|query|key|value") : targets, TaskType = task },
            "bitfit" => new BitFitConfig { TaskType = task },
            _ => throw new ArgumentException($"option method '{o.Method}' is not one of: {string.Join(", ", Names)}"),
        };
    }

    static string[] AttentionNames(ModelConfig m) => m.ModelType switch
    {
        "gpt2" => ["c_attn"],
        "bert" => ["query", "value"],
        "phi3" => ["qkv_proj"], // fused; PEFT has no default for phi3
        _ => ["q_proj", "v_proj"],
    };

    static IA3Config IA3(ModelConfig m, string task) => m.ModelType switch
    {
        "gpt2" => new IA3Config { TargetModules = ["c_attn", "mlp.c_proj"], FeedforwardModules = ["mlp.c_proj"], FanInFanOut = true, TaskType = task },
        "bert" => new IA3Config { TargetModules = ["key", "value", "output.dense"], FeedforwardModules = ["output.dense"], TaskType = task },
        "phi3" => new IA3Config { TargetModules = ["qkv_proj", "down_proj"], FeedforwardModules = ["down_proj"], TaskType = task },
        // PEFT's TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING: these families scale q, not k.
        "qwen3" or "gemma2" or "gemma3_text" => new IA3Config { TargetModules = ["q_proj", "v_proj", "down_proj"], FeedforwardModules = ["down_proj"], TaskType = task },
        _ => new IA3Config { TargetModules = ["k_proj", "v_proj", "down_proj"], FeedforwardModules = ["down_proj"], TaskType = task },
    };

    /// <summary>The trainer's view of the model, with what a method adds to training (AdaLoRA's regulariser and rank allocation).</summary>
    public static TrainableModel Trainable(PeftModel model, string task)
    {
        var plain = Objectives.ForPeft(model, task);
        if (model.Configs.Values.SingleOrDefault() is not AdaLoraConfig) return plain;
        var allocator = new RankAllocator(model);
        return plain with
        {
            // The regulariser shapes training only: held-out loss stays the plain loss.
            ComputeLoss = b => model.Base.training ? plain.ComputeLoss(b) + allocator.OrthogonalRegularization(model) : plain.ComputeLoss(b),
            AfterOptimizerStep = step => allocator.UpdateAndAllocate(model, step),
        };
    }
}
