using System.Text.RegularExpressions;
using PeftSharp.Training;
using static TorchSharp.torch;

namespace PeftSharp.Benchmarks;

/// <summary>
/// <c>sparse [--steps 20]</c>: sparse fine-tuning against LoRA and full fine-tuning on tinycode-3m, all-linear targets,
/// the sparse methods at LoRA r=8's number of trainable parameters; each run in its own process for a clean peak RSS.
/// Then the cost of applying a sparse delta in the forward and backward, three ways.
/// </summary>
internal static class SparseBenchmark
{
    public const string ChildVerb = "_sparse";

    // LoRA r=8 on every linear layer of tinycode-3m trains 162,816 parameters of 2,359,296: density 0.069 matches it.
    const double LoraDensity = 0.069;

    public static int Run(string[] args)
    {
        int steps = args.Length > 1 && args[0] == "--steps" ? int.Parse(args[1]) : 20;
        Console.WriteLine($"tinycode-3m, bundled first-run data, {steps} steps, batch 8 x 128 tokens, lr 1e-3 (LoRA, full) and 1e-2 (sparse deltas), CPU {Environment.ProcessorCount} cores");
        Console.WriteLine("| method | trainable params | tokens/s | peak RSS MiB | held-out loss before | after |");
        Console.WriteLine("|---|---|---|---|---|---|");
        foreach (var m in new[] { "full", "lora", "shira", "random-mask", "magnitude", "spiel", "lt-sft", "lift" })
        {
            var r = Child(m, steps);
            Console.WriteLine(r.Error is null
                ? $"| {m} | {r.Trainable} | {r.TokensPerSecond:N0} | {r.PeakMiB:N0} | {r.Before:F4} | {r.After:F4} |"
                : $"| {m} | failed: {r.Error} | | | | |");
        }
        Apply();
        return 0;
    }

    /// <summary>The child: one training run, one result line.</summary>
    public static int RunOne(string[] args)
    {
        var method = args[0];
        int steps = int.Parse(args[1]);
        bool full = method == "full";
        var options = new TrainingOptions
        {
            // Full fine-tuning: LISA with every decoder layer active and no re-sampling trains all parameters.
            Method = full ? "lisa" : method, LisaActiveLayers = 6, LisaInterval = steps + 1,
            LoraR = 8, Density = LoraDensity, SparseReselectionSteps = Math.Max(2, steps / 4),
            MaxSteps = steps, MaxLength = 128, PerDeviceTrainBatchSize = 8, WarmupRatio = 0, LrSchedulerType = "constant",
            // Sparse deltas start at zero on a few entries and need larger steps than LoRA's factors (as in the SpIEL paper).
            LearningRate = method is "lora" or "full" ? 1e-3 : 1e-2,
            OutputDir = null, SampleMaxNewTokens = 0, SamplePrompt = "",
        };
        var data = Path.Combine(Path.GetDirectoryName(Measure.ModelDir("tinycode-3m"))!, "..", "data", "first-run");
        var report = FineTune.Run(options, Measure.ModelDir("tinycode-3m"), data, new TrainerHooks { HandleCtrlC = false });
        var tps = report.Result.Steps.Skip(1).Select(s => s.TokensPerSecond).DefaultIfEmpty(0).Average();
        var trainable = full ? "all" : Regex.Match(report.TrainableSummary, @"trainable params: ([\d,]+)").Groups[1].Value;
        Console.WriteLine($"RESULT\t{trainable}\t{tps}\t{Measure.PeakRssMiB()}\t{report.Before?.Loss}\t{report.After?.Loss}");
        return 0;
    }

    sealed record Result(string Trainable, double TokensPerSecond, double PeakMiB, double Before, double After, string? Error);

    static Result Child(string method, int steps)
    {
        var (f, error) = ChildRun.Run([ChildVerb, method, steps.ToString()]);
        return f is null ? new Result("", 0, 0, 0, 0, error) : new Result(f[0], ChildRun.Number(f[1]), ChildRun.Number(f[2]), ChildRun.Number(f[3]), ChildRun.Number(f[4]), null);
    }

    /// <summary>
    /// y = x (W + scatter(idx, v))ᵀ forward and backward to v, for a 512x192 weight at 7% density and 1024 tokens:
    /// index_add into a copy of W (what the layer does); scatter into a zero buffer, then W + buffer; and base output
    /// plus a sparse-matrix product x Sᵀ.
    /// </summary>
    static void Apply()
    {
        using var scope = NewDisposeScope();
        manual_seed(0);
        var w = randn(512, 192);
        var x = randn(1024, 192);
        var k = (long)(0.069 * w.numel());
        var idx = randperm(w.numel()).narrow(0, 0, k).sort().Values;
        var v = zeros(k).requires_grad_(true);
        var rows = idx.div(192, RoundingMode.floor);
        var cols = idx.remainder(192);
        var ways = new (string Name, Func<Tensor> Forward)[]
        {
            ("index_add into a copy of W", () => nn.functional.linear(x, w.flatten().index_add(0, idx, v, 1).view(512, 192))),
            ("scatter into a zero buffer, W + buffer", () => nn.functional.linear(x, w + zeros(w.numel()).scatter(0, idx, v).view(512, 192))),
            ("W x + sparse mm", () => nn.functional.linear(x, w) + sparse_coo_tensor(stack([rows, cols]), v, [512, 192]).mm(x.t()).t()),
        };
        Console.WriteLine();
        Console.WriteLine("| applying a 7% sparse delta to a 512x192 weight, 1024 tokens | forward + backward ms |");
        Console.WriteLine("|---|---|");
        foreach (var (name, forward) in ways)
        {
            var seconds = Measure.Median(() =>
            {
                using var s = NewDisposeScope();
                forward().sum().backward();
                v.grad?.zero_();
            }, runs: 20, warmup: 3);
            Console.WriteLine($"| {name} | {seconds * 1000:F2} |");
        }
    }
}
