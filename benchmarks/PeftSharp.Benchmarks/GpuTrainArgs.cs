using System.Globalization;
using PeftSharp.Models;

namespace PeftSharp.Benchmarks;

/// <summary>
/// A model and batch shape of the GPU benchmark (benchmarks/gpu, issue "benchmark against Python PEFT"). The same table
/// is in benchmarks/python/peft_bench.py (SHAPES): change both together.
/// </summary>
internal sealed record GpuShape(string Name, int Hidden, int Layers, int Heads, int KvHeads, int Mlp, int Vocab, int Batch, int Seq,
    bool Checkpointing)
{
    /// <summary>Tied input and output embeddings (all the issue's shapes are); from config.json when starting from --init.</summary>
    public bool Tied { get; init; } = true;

    public static readonly GpuShape[] All =
    [
        new("a", 576, 30, 9, 3, 1536, 49152, 8, 512, false),      // SmolLM-135M-shaped
        new("b", 896, 24, 14, 2, 4864, 151936, 8, 512, false),    // Qwen2.5-0.5B-shaped
        new("b-ckpt", 896, 24, 14, 2, 4864, 151936, 8, 512, true),
        new("c", 896, 24, 14, 2, 4864, 151936, 4, 2048, true),
        new("tiny", 64, 2, 4, 2, 128, 512, 2, 32, false),         // a CPU smoke test, seconds
    ];

    public static GpuShape Named(string name) => All.FirstOrDefault(s => s.Name == name)
        ?? throw new ArgumentException($"--config '{name}' is not known; configs: {string.Join(", ", All.Select(s => s.Name))}");

    /// <summary>
    /// A Llama config with transformers' <c>LlamaConfig</c> defaults for everything but the shape (rms_norm_eps 1e-6,
    /// rope_theta 10000, no biases), tied embeddings: what peft_bench.py builds.
    /// </summary>
    public ModelConfig ToModelConfig() => new()
    {
        ModelType = "llama", Architectures = ["LlamaForCausalLM"],
        VocabSize = Vocab, HiddenSize = Hidden, IntermediateSize = Mlp, NumLayers = Layers,
        NumHeads = Heads, NumKvHeads = KvHeads, HeadDim = Hidden / Heads,
        NormEps = 1e-6, MaxPositions = Math.Max(2048, Seq), TieWordEmbeddings = Tied, RopeTheta = 10000.0,
    };

    public string Describe() =>
        $"hidden {Hidden}, {Layers} layers, {Heads} heads / {KvHeads} kv heads, MLP {Mlp}, vocab {Vocab}, {(Tied ? "tied" : "untied")}; " +
        $"batch {Batch} x {Seq}; gradient checkpointing {(Checkpointing ? "on" : "off")}";
}

/// <summary>The options of <c>gpu-train</c>; see <see cref="Usage"/>.</summary>
internal sealed record GpuTrainArgs
{
    public const string Usage =
        "gpu-train [--config a|b|b-ckpt|c|tiny] [--tiny] [--device cuda|cpu] [--dtype bf16|f32] [--steps 20] [--warmup-steps 5]\n" +
        "          [--batch B] [--seq T] [--gradient-checkpointing] [--lr 1e-4] [--optim adamw_torch_fused|adamw_torch] [--seed 0]\n" +
        "          [--init DIR (base/, adapter/, data.safetensors from peft_bench.py init)] [--data FILE] [--losses-out FILE]";

    public GpuShape Shape { get; init; } = GpuShape.Named("a");
    public string Device { get; init; } = "cuda";
    public bool Bf16 { get; init; } = true;
    public int Steps { get; init; } = 20;
    public int WarmupSteps { get; init; } = 5;
    public double LearningRate { get; init; } = 1e-4;
    public long Seed { get; init; }
    /// <summary>adamw_torch_fused, as peft_bench.py's torch.optim.AdamW(fused=True) and transformers' Trainer default; or adamw_torch.</summary>
    public string Optim { get; init; } = "adamw_torch_fused";
    public string? Init { get; init; }
    public string? Data { get; init; }
    public string? LossesOut { get; init; }

    public int TotalSteps => WarmupSteps + Steps;

    /// <summary>The token file: --data, else the init folder's data.safetensors, else none (random tokens).</summary>
    public string? DataFile => Data ?? (Init is null ? null : Path.Combine(Init, "data.safetensors"));

    public static GpuTrainArgs Parse(IReadOnlyList<string> args)
    {
        var a = new GpuTrainArgs();
        int? batch = null, seq = null;
        bool checkpointing = false;
        for (int i = 0; i < args.Count; i++)
        {
            string Value() => i + 1 < args.Count ? args[++i] : throw new ArgumentException($"{args[i]} needs a value\nusage: {Usage}");
            int Int() => int.Parse(Value(), CultureInfo.InvariantCulture);
            switch (args[i])
            {
                case "--config": a = a with { Shape = GpuShape.Named(Value()) }; break;
                case "--tiny": a = a with { Shape = GpuShape.Named("tiny") }; break;
                case "--device": a = a with { Device = Value() }; break;
                case "--dtype":
                    var d = Value();
                    a = a with { Bf16 = d is "bf16" or "bfloat16" ? true : d is "f32" or "float32" ? false : throw new ArgumentException($"--dtype {d}: use bf16 or f32") };
                    break;
                case "--steps": a = a with { Steps = Int() }; break;
                case "--warmup-steps": a = a with { WarmupSteps = Int() }; break;
                case "--batch": batch = Int(); break;
                case "--seq": seq = Int(); break;
                case "--gradient-checkpointing": checkpointing = true; break;
                case "--lr": a = a with { LearningRate = double.Parse(Value(), CultureInfo.InvariantCulture) }; break;
                case "--optim": a = a with { Optim = Value() }; break;
                case "--seed": a = a with { Seed = long.Parse(Value(), CultureInfo.InvariantCulture) }; break;
                case "--init": a = a with { Init = Value() }; break;
                case "--data": a = a with { Data = Value() }; break;
                case "--losses-out": a = a with { LossesOut = Value() }; break;
                default: throw new ArgumentException($"unknown option '{args[i]}'\nusage: {Usage}");
            }
        }
        a = a with
        {
            Shape = a.Shape with
            {
                Batch = batch ?? a.Shape.Batch, Seq = seq ?? a.Shape.Seq, Checkpointing = a.Shape.Checkpointing || checkpointing,
            },
        };
        if (a.Steps < 1) throw new ArgumentException("--steps must be at least 1");
        if (a.WarmupSteps < 0) throw new ArgumentException("--warmup-steps must not be negative");
        if (a.Shape.Batch < 1 || a.Shape.Seq < 2) throw new ArgumentException("--batch must be at least 1 and --seq at least 2");
        return a;
    }
}
