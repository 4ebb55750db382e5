using PeftSharp.Peft;
using PeftSharp.Tests.Tuners;
using PeftSharp.Tuners;
using PeftSharp.Tuners.AdaLora;
using PeftSharp.Tuners.BitFit;
using PeftSharp.Tuners.Hydra;
using PeftSharp.Tuners.IncreLora;
using PeftSharp.Tuners.Bottleneck;
using PeftSharp.Tuners.IA3;
using PeftSharp.Tuners.LnTuning;
using PeftSharp.Tuners.LoHa;
using PeftSharp.Tuners.LoKr;
using PeftSharp.Tuners.Loldu;
using PeftSharp.Tuners.Lora;
using PeftSharp.Tuners.Meteora;
using PeftSharp.Tuners.Miss;
using PeftSharp.Tuners.MixLora;
using PeftSharp.Tuners.Poly;
using PeftSharp.Tuners.PrefixTuning;
using PeftSharp.Tuners.PromptTuning;
using PeftSharp.Tuners.PTuning;
using PeftSharp.Tuners.Ssf;
using PeftSharp.Tuners.SparseFt;
using PeftSharp.Tuners.SparseFt.Shira;
using PeftSharp.Tuners.Vera;

namespace PeftSharp.Tests.Contract;

/// <summary>
/// One row per method (and per variant worth its own row): the model it runs on, a config with dropout where the
/// method has one, and which promises apply. <see cref="MethodContractTests"/> runs every row through the same checks;
/// a new method adds a row here.
/// </summary>
/// <param name="Lr">Adam's learning rate for the few training steps (short runs need large steps).</param>
public sealed record MethodCase(string Name, string Model, Func<PeftConfig> Config, double Lr = 2e-2)
{
    /// <summary>A fresh adapter leaves the model's output unchanged (false for prompt learning: it adds tokens).</summary>
    public bool Identity { get; init; } = true;
    /// <summary>The adapter can be written into the base weights.</summary>
    public bool Mergeable { get; init; }
    /// <summary>The config has dropout (or another training-only randomness) that is on: training-mode forwards differ.</summary>
    public bool Random { get; init; }
    /// <summary>Leading logits positions that belong to virtual tokens (prompt tuning, P-tuning).</summary>
    public int VirtualTokens { get; init; }
    /// <summary>The PEFT 0.21 reference adapter of this method in tests/fixtures/peft-reference/adapters, if any.</summary>
    public string? Fixture { get; init; }
    /// <summary>Run on a fresh adapter before anything else: a data-aware init's calibration (EVA, CorDA, LoRA-GA).</summary>
    public Action<PeftModel>? Prepare { get; init; }
    /// <summary>The init moved part of the base into the adapter (CorDA, LoRA-GA): disabled, the model runs the residual base.</summary>
    public bool ResidualBase { get; init; }
    /// <summary>Each batch row's task id, for methods that route by task (Poly); null for the rest.</summary>
    public long[]? TaskIds { get; init; }

    public override string ToString() => Name;
}

internal static class MethodCases
{
    const string Llama = "tiny-llama", Gpt2 = "tiny-gpt2";
    static ModuleSelector Targets(params string[] names) => ModuleSelector.Of(names);

    public static readonly MethodCase[] All =
    [
        new("lora", Llama, () => new LoraConfig { R = 4, LoraAlpha = 8, LoraDropout = 0.2, TargetModules = Targets("q_proj", "v_proj") })
            { Mergeable = true, Random = true, Fixture = "llama-lora-qv" },
        new("lora-rslora-all-linear", Llama, () => new LoraConfig { R = 4, LoraAlpha = 8, UseRslora = true, LoraDropout = 0.2, TargetModules = Targets("all-linear") })
            { Mergeable = true, Random = true, Fixture = "llama-lora-alllinear-rslora" },
        new("dora", Llama, () => new LoraConfig { R = 4, LoraAlpha = 8, UseDora = true, LoraDropout = 0.2, TargetModules = Targets("q_proj", "v_proj") })
            { Mergeable = true, Random = true, Fixture = "llama-dora" },
        new("lora-orthogonal", Llama, () => new LoraConfig { R = 4, LoraAlpha = 8, LoraDropout = 0.2, InitLoraWeights = "orthogonal", TargetModules = Targets("q_proj", "v_proj") })
            { Mergeable = true, Random = true },
        new("eva", Llama, () => new LoraConfig { R = 4, LoraAlpha = 8, LoraDropout = 0.2, InitLoraWeights = "eva", EvaConfig = new EvaConfig(), TargetModules = Targets("q_proj", "v_proj", "down_proj") })
            { Mergeable = true, Random = true, Prepare = Calibrate },
        new("corda-kpm", Llama, () => new LoraConfig { R = 4, LoraAlpha = 8, LoraDropout = 0.2, InitLoraWeights = "corda", CordaConfig = new CordaConfig { CordaMethod = "kpm" }, TargetModules = Targets("q_proj", "v_proj", "down_proj") })
            { Mergeable = true, Random = true, Prepare = Calibrate, ResidualBase = true },
        new("lora-ga-gpt2", Gpt2, () => new LoraConfig { R = 4, LoraAlpha = 8, LoraDropout = 0.2, FanInFanOut = true, InitLoraWeights = "lora_ga", LoraGaConfig = new LoraGaConfig(), TargetModules = Targets("c_attn", "c_fc") })
            { Mergeable = true, Random = true, Prepare = Calibrate, ResidualBase = true },
        new("lora-conv1d-gpt2", Gpt2, () => new LoraConfig { R = 4, LoraAlpha = 8, LoraDropout = 0.2, FanInFanOut = true, TargetModules = Targets("c_attn", "c_fc") })
            { Mergeable = true, Random = true, Fixture = "gpt2-lora-conv1d" },
        new("ia3", Llama, () => new IA3Config { TargetModules = Targets("k_proj", "v_proj", "down_proj"), FeedforwardModules = Targets("down_proj") }, 0.1)
            { Mergeable = true, Fixture = "llama-ia3" },
        new("loha", Llama, () => new LoHaConfig { R = 4, Alpha = 8, RankDropout = 0.3, ModuleDropout = 0.2, TargetModules = Targets("q_proj", "v_proj") })
            { Mergeable = true, Random = true, Fixture = "llama-loha" },
        new("lokr", Llama, () => new LoKrConfig { R = 2, Alpha = 4, RankDropout = 0.3, DecomposeBoth = true, TargetModules = Targets("q_proj", "v_proj", "down_proj") }, 5e-2)
            { Mergeable = true, Random = true, Fixture = "llama-lokr" },
        new("vera", Llama, () => new VeraConfig { R = 16, VeraDropout = 0.2, ProjectionPrngKey = 7, TargetModules = Targets("q_proj", "v_proj", "o_proj", "down_proj") }, 5e-2)
            { Mergeable = true, Random = true, Fixture = "llama-vera" },
        new("adalora", Llama, () => new AdaLoraConfig { InitR = 6, TargetR = 2, LoraAlpha = 8, LoraDropout = 0.2, TargetModules = Targets("q_proj", "v_proj", "gate_proj") }, 5e-2)
            { Mergeable = true, Random = true, Fixture = "llama-adalora" },
        new("miss", Llama, () => new MissConfig { R = 8, MissDropout = 0.2, TargetModules = Targets("q_proj", "v_proj", "down_proj") }, 1e-2)
            { Mergeable = true, Random = true },
        new("miss-bat", Llama, () => new MissConfig { R = 8, InitWeights = "bat", TargetModules = Targets("q_proj", "v_proj", "down_proj") }, 1e-2)
            { Mergeable = true },
        new("loldu", Llama, () => new LolduConfig { R = 8, Alpha = 8, LolduDropout = 0.2, TargetModules = Targets("q_proj", "v_proj", "down_proj") }, 5e-2)
            { Mergeable = true, Random = true },
        new("loldu-gpt2", Gpt2, () => new LolduConfig { R = 4, Alpha = 4, TargetModules = Targets("c_attn", "c_fc") }, 5e-2) { Mergeable = true },
        new("ln-tuning-llama", Llama, () => new LnTuningConfig { TaskType = "CAUSAL_LM" }) { Mergeable = true },
        new("ln-tuning-gpt2", Gpt2, () => new LnTuningConfig { TaskType = "CAUSAL_LM" }) { Mergeable = true },
        new("bottleneck-houlsby-llama", Llama, () => new BottleneckConfig { AdapterType = "sequential", Placement = "both", ReductionFactor = 8, AdapterDropout = 0.5 })
            { Random = true },
        new("bottleneck-parallel-ffn-gpt2", Gpt2, () => new BottleneckConfig { AdapterType = "parallel", Placement = "ffn", Scaling = 4.0, NonLinearity = "gelu", AdapterDropout = 0.3 })
            { Random = true },
        new("bottleneck-adaptformer-llama", Llama, () => new BottleneckConfig { AdapterType = "parallel", Placement = "ffn", Scaling = 0.1, NonLinearity = "silu", ReductionFactor = 4 }),
        new("bottleneck-parallel-attn-gpt2", Gpt2, () => new BottleneckConfig { AdapterType = "parallel", Placement = "attention", ReductionFactor = 8 }),
        new("ssf-gpt2", Gpt2, () => new SsfConfig { TargetModules = Targets("c_attn", "c_proj", "c_fc", "ln_1", "ln_2", "ln_f") }) { Mergeable = true },
        new("ssf-llama", Llama, () => new SsfConfig { TargetModules = Targets("all-linear") }),
        new("bitfit-gpt2", Gpt2, () => new BitFitConfig { TaskType = "CAUSAL_LM" }) { Mergeable = true },
        new("sparse-random-mask", Llama, () => new SparseFtConfig { Method = "random-mask", Density = 0.05, RandomSeed = 3, TargetModules = Targets("all-linear") })
            { Mergeable = true },
        new("sparse-magnitude-gpt2", Gpt2, () => new SparseFtConfig { Method = "magnitude", Density = 0.05, TargetModules = Targets("c_attn", "c_fc") })
            { Mergeable = true },
        new("sparse-spiel", Llama, () => new SparseFtConfig { Method = "spiel", Density = 0.05, ReselectionSteps = 4, TargetModules = Targets("q_proj", "v_proj", "down_proj") })
            { Mergeable = true },
        new("sparse-lt-sft", Llama, () => new SparseFtConfig { Method = "lt-sft", Density = 0.05, LtSft = new() { Phase1Steps = 2 }, TargetModules = Targets("q_proj", "v_proj") })
            { Mergeable = true },
        new("sparse-lift", Llama, () => new SparseFtConfig { Method = "lift", Density = 0.05, Lift = new() { Rank = 2 }, TargetModules = Targets("q_proj", "v_proj", "gate_proj") })
            { Mergeable = true },
        new("sparse-sara", Llama, () => new SparseFtConfig { Method = "sara", Density = 0.05, TargetModules = Targets("q_proj", "v_proj", "down_proj") })
            { Mergeable = true },
        new("sparse-s2ft", Llama, () => new SparseFtConfig { Method = "s2ft", Density = 0.5, RandomSeed = 2, TargetModules = Targets("all-linear") })
            { Mergeable = true },
        new("dsee", Llama, () => new PeftSharp.Tuners.SparseFt.Dsee.DseeConfig { R = 4, LoraAlpha = 8, LoraDropout = 0.2, Density = 0.05, DecompositionRank = 4, TargetModules = Targets("q_proj", "v_proj", "down_proj") })
            { Mergeable = true, Random = true },
        new("shira", Llama, () => new ShiraConfig { R = 2, RandomSeed = 42, TargetModules = Targets("q_proj", "v_proj", "up_proj") }) { Mergeable = true },
        new("prompt-tuning", Llama, () => new PromptTuningConfig { NumVirtualTokens = 4, TaskType = "CAUSAL_LM" }, 0.3)
            { Identity = false, VirtualTokens = 4 },
        new("prefix-tuning", Llama, () => new PrefixTuningConfig { NumVirtualTokens = 4, TaskType = "CAUSAL_LM" }, 0.3) { Identity = false },
        new("prefix-tuning-projection", Llama, () => new PrefixTuningConfig { NumVirtualTokens = 4, PrefixProjection = true, EncoderHiddenSize = 24, TaskType = "CAUSAL_LM" }, 0.3)
            { Identity = false },
        new("p-tuning-mlp", Llama, () => new PromptEncoderConfig { NumVirtualTokens = 4, EncoderHiddenSize = 32, TaskType = "CAUSAL_LM" }, 0.3)
            { Identity = false, VirtualTokens = 4 },
        new("p-tuning-lstm", Llama, () => new PromptEncoderConfig { NumVirtualTokens = 4, EncoderReparameterizationType = "LSTM", EncoderHiddenSize = 16, EncoderNumLayers = 2, EncoderDropout = 0.3, TaskType = "CAUSAL_LM" }, 0.3)
            { Identity = false, VirtualTokens = 4, Random = true },
        new("hydra", Llama, () => new HydraConfig { R = 4, LoraAlpha = 8, LoraDropout = 0.2, TargetModules = Targets("q_proj", "v_proj", "down_proj") })
            { Mergeable = true, Random = true },
        new("increlora", Llama, () => new IncreLoraConfig { InitR = 2, TargetR = 4, LoraAlpha = 8, LoraDropout = 0.2, TargetModules = Targets("q_proj", "v_proj", "gate_proj") }, 5e-2)
            { Mergeable = true, Random = true },
        new("hydra-gpt2", Gpt2, () => new HydraConfig { R = 4, LoraAlpha = 8, TargetModules = Targets("c_attn", "c_fc") }) { Mergeable = true },
        // Poly's router samples relaxed-Bernoulli weights in training: that is its training-only randomness.
        new("poly-mhr", Llama, () => new PolyConfig { R = 4, NTasks = 3, NSkills = 3, NSplits = 2, TargetModules = Targets("q_proj", "v_proj") }, 5e-2)
            { Random = true, TaskIds = [2, 0] },
        // The two task adapters of MeteoraTests, trained once: a fresh gate mixes adapters that already change the model.
        new("meteora", Llama, () => new MeteoraConfig { Adapters = Mixtures.MeteoraTests.AdapterDirs, TopK = 2 }, 1e-2)
            { Identity = false },
        new("mixlora", Llama, () => new MixLoraConfig { R = 4, LoraAlpha = 8, LoraDropout = 0.2, NumExperts = 4, TopK = 2, TargetModules = Targets("q_proj", "v_proj", "gate_proj", "up_proj", "down_proj") }, 5e-2)
            { Random = true },
    ];

    // Calibration batches for the data-aware inits: fixed random rows, as the contract's own batches are.
    static void Calibrate(PeftModel pm) =>
        global::PeftSharp.Training.Calibration.Run(pm, Enumerable.Range(0, 3).Select(i => global::PeftSharp.Data.BatchSource.FromInputIds(TrainingLoop.Batch(seed: 20 + i)).MicroBatch([0, 1], 0, 2)).ToList());

    public static MethodCase Get(string name) => All.Single(c => c.Name == name);

    public static TheoryData<string> Names(Func<MethodCase, bool>? where = null) => new(All.Where(where ?? (_ => true)).Select(c => c.Name));
}
