using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tuners.Lora;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Benchmarks;

/// <summary>Safetensors load throughput, forward tokens/s and LoRA's overhead over the frozen base.</summary>
internal static class CoreBenchmarks
{
    /// <summary>
    /// <c>io [--gb 1]</c>: writes a one-file checkpoint of that size, then reads it from a warm page cache three ways:
    /// raw sequential reads into one reused buffer (what <c>dd bs=16M of=/dev/null</c> does), our load into new
    /// tensors, and our load into existing tensors (what <see cref="AutoModel.LoadWeights"/> does). Target: load/raw >= 0.7.
    /// </summary>
    public static int Io(string[] args)
    {
        double gb = args.Length > 1 && args[0] == "--gb" ? double.Parse(args[1]) : 1.0;
        var dir = Path.Combine(Path.GetTempPath(), $"peftsharp-bench-io-{Environment.ProcessId}");
        Directory.CreateDirectory(dir);
        long perTensor = 64L << 20; // 64 MiB each, in bfloat16 (kept bfloat16: no cast on load)
        int count = (int)Math.Max(1, gb * 1e9 / perTensor);
        var specs = Enumerable.Range(0, count).Select(i => new TensorSpec($"layers.{i}.weight", ScalarType.BFloat16, [perTensor / 2 / 4096, 4096])).ToList();
        try
        {
            using (var w = new ShardedCheckpointWriter(dir, specs, 5_000_000_000))
            {
                foreach (var s in specs)
                {
                    using var scope = NewDisposeScope();
                    w.Write(s.Name, randn(s.Shape, ScalarType.BFloat16));
                }
                w.Commit();
            }
            long bytes = specs.Sum(s => s.ByteLength);
            var file = Path.Combine(dir, Checkpoint.SingleFile);
            var buffer = new byte[16 << 20];
            double raw = Measure.Median(() =>
            {
                using var f = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan);
                while (f.Read(buffer) > 0) { }
            }, runs: 5);
            double load = Measure.Median(() =>
            {
                using var ckpt = Checkpoint.Open(dir);
                foreach (var n in ckpt.Names) ckpt.Load(n).Dispose();
            }, runs: 5);
            var targets = specs.ToDictionary(s => s.Name, s => empty(s.Shape, ScalarType.BFloat16));
            double into = Measure.Median(() =>
            {
                using var ckpt = Checkpoint.Open(dir);
                foreach (var n in ckpt.Names) ckpt.LoadInto(n, targets[n]);
            }, runs: 5);
            foreach (var t in targets.Values) t.Dispose();
            Console.WriteLine($"| read | GB | seconds | GB/s | / raw |");
            Console.WriteLine($"|---|---|---|---|---|");
            foreach (var (name, s) in new[] { ("raw (dd-equivalent, 16 MiB buffer)", raw), ("load into new tensors", load), ("load into existing tensors", into) })
                Console.WriteLine($"| {name} | {bytes / 1e9:F2} | {s:F3} | {bytes / 1e9 / s:F2} | {raw / s:F2} |");
            Console.WriteLine($"cores: {Environment.ProcessorCount}, torch threads: {get_num_threads()}");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
        return 0;
    }

    /// <summary><c>forward</c>: tinycode-3m forward tokens/s on CPU, float32 and bfloat16, batch 8 x 256.</summary>
    public static int Forward(string[] args)
    {
        Console.WriteLine($"| model | dtype | tokens/s (forward, no grad) | threads |");
        Console.WriteLine($"|---|---|---|---|");
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16 })
        {
            var model = AutoModel.Load(Measure.ModelDir("tinycode-3m"), dtype);
            using var ids = randint(0, model.Config.VocabSize, [8, 256]);
            double s = Measure.Median(() =>
            {
                using var scope = NewDisposeScope();
                using var _ = no_grad();
                model.Forward(ModelInputs.Ids(ids));
            });
            Console.WriteLine($"| tinycode-3m | {dtype} | {8 * 256 / s:N0} | {get_num_threads()} |");
        }
        return 0;
    }

    /// <summary>
    /// <c>lora</c>: forward+backward seconds of the frozen base (gradients to the input only) against the same with
    /// LoRA r=16 on all linear layers, for tinycode-3m and a 4-layer stack shaped like Qwen2.5-0.5B's layers.
    /// </summary>
    public static int Lora(string[] args)
    {
        Console.WriteLine("| model | tokens | base fwd+bwd s | LoRA fwd+bwd s | overhead | merge s |");
        Console.WriteLine("|---|---|---|---|---|---|");
        Run("tinycode-3m", () => AutoModel.Load(Measure.ModelDir("tinycode-3m")), 8, 256);
        var qwenShaped = new ModelConfig
        {
            ModelType = "qwen2", Architectures = ["Qwen2ForCausalLM"], VocabSize = 8192, HiddenSize = 896, IntermediateSize = 4864,
            NumLayers = 4, NumHeads = 14, NumKvHeads = 2, HeadDim = 64, AttentionBias = true, NormEps = 1e-6, TieWordEmbeddings = true,
        };
        Run("0.5B-shaped x4 layers", () => AutoModel.Create(qwenShaped), 2, 256);
        return 0;

        static void Run(string name, Func<PretrainedModel> make, int b, int t)
        {
            var model = make();
            foreach (var p in model.parameters()) p.requires_grad = false;
            using var ids = randint(0, model.Config.VocabSize, [b, t]);
            double Step(ILanguageModel m, bool embedGrad) => Measure.Median(() =>
            {
                using var scope = NewDisposeScope();
                var logits = m.Forward(ModelInputs.Ids(ids));
                var loss = Losses.CausalLM(logits, ids);
                if (loss.requires_grad) loss.backward();
            }, runs: 3);
            // The frozen base alone needs a gradient path to time its backward: make the embeddings trainable for it.
            model.parameters().First().requires_grad = true;
            double baseS = Step(model, true);
            model.parameters().First().requires_grad = false;
            var pm = PeftModel.Create(model, new LoraConfig { R = 16, LoraAlpha = 32, TargetModules = ["all-linear"] });
            double loraS = Step(pm, false);
            var sw = System.Diagnostics.Stopwatch.StartNew();
            pm.MergeAdapter();
            double mergeS = sw.Elapsed.TotalSeconds;
            Console.WriteLine($"| {name} | {b}x{t} | {baseS:F3} | {loraS:F3} | {100 * (loraS / baseS - 1):F0}% | {mergeS:F3} |");
        }
    }
}
