using System.Diagnostics;
using System.Text.RegularExpressions;
using PeftSharp.Training;

namespace PeftSharp.Benchmarks;

/// <summary>Training throughput and memory on tinycode-3m (the per-method table is <see cref="MethodTable"/>).</summary>
internal static class TrainBenchmarks
{
    public const string ChildVerb = "_method";

    /// <summary><c>train [--steps 10]</c>: LoRA training tokens/s and peak RSS, float32 and bfloat16 base, each in its own process.</summary>
    public static int Train(string[] args)
    {
        int steps = Steps(args, 10);
        Console.WriteLine("| base dtype | tokens/s | peak RSS MiB |");
        Console.WriteLine("|---|---|---|");
        foreach (var bf16 in new[] { false, true })
        {
            var r = Child("lora", steps, bf16);
            Console.WriteLine($"| {(bf16 ? "bfloat16" : "float32")} | {r.TokensPerSecond:N0} | {r.PeakMiB:N0} |");
        }
        return 0;
    }

    /// <summary>
    /// <c>optims [--steps 20] [--cpu]</c>: LoRA with each <c>--optim</c>, same steps and data, each in its own process;
    /// <c>--cpu</c> gives tokens per second of CPU time instead of wall time (for a loaded machine).
    /// </summary>
    public static int Optims(string[] args)
    {
        int steps = Steps(args, 20);
        Console.WriteLine($"tinycode-3m, LoRA r=8 on all linear layers, bundled first-run data, {steps} steps, batch 8 x 128 tokens, lr 1e-3, CPU {Environment.ProcessorCount} cores");
        Console.WriteLine($"| optim | tokens/s{(args.Contains("--cpu") ? " of CPU time" : "")} | peak RSS MiB | held-out loss before | after |");
        Console.WriteLine("|---|---|---|---|---|");
        foreach (var optim in new[] { "auto", "loraplus", "lorafa", "lorapro" })
        {
            var r = Child("lora", steps, bf16: false, optim, cpu: args.Contains("--cpu"));
            Console.WriteLine(r.Error is null
                ? $"| {optim} | {r.TokensPerSecond:N0} | {r.PeakMiB:N0} | {r.Before:F4} | {r.After:F4} |"
                : $"| {optim} | failed: {r.Error} | | | |");
        }
        return 0;
    }

    /// <summary>The child: one training run, one result line.</summary>
    public static int RunOne(string[] args)
    {
        var method = args[0];
        int steps = int.Parse(args[1]);
        bool bf16 = args.Length > 2 && args[2] == "bf16";
        var options = new TrainingOptions
        {
            Method = method, MaxSteps = steps, MaxLength = 128, PerDeviceTrainBatchSize = 8, LearningRate = 1e-3, WarmupRatio = 0,
            LrSchedulerType = "constant", OutputDir = null, SampleMaxNewTokens = 0, Bf16 = bf16, SamplePrompt = "",
            Optim = args.Length > 3 ? args[3] : "auto",
        };
        var data = Path.Combine(Path.GetDirectoryName(Measure.ModelDir("tinycode-3m"))!, "..", "data", "first-run");
        bool cpuTime = args.Length > 4 && args[4] == "cpu";
        // Measuring CPU time on a loaded machine: no held-out evaluations, only the steps.
        if (cpuTime) options = options with { TrainFile = Path.Combine(data, "train.jsonl"), EvalFile = null, EvalRatio = 0 };
        var cpu = new CpuPerStep();
        var report = FineTune.Run(options, Measure.ModelDir("tinycode-3m"), data, new TrainerHooks { HandleCtrlC = false, Progress = cpu });
        var tps = report.Result.Steps.Skip(1).Select(s => s.TokensPerSecond).DefaultIfEmpty(0).Average();
        if (cpuTime) tps = cpu.TokensPerCpuSecond();
        var trainable = Regex.Match(report.TrainableSummary, @"trainable params: ([\d,]+)").Groups[1].Value;
        Console.WriteLine($"RESULT\t{trainable}\t{tps}\t{Measure.PeakRssMiB()}\t{report.Before?.Loss ?? double.NaN}\t{report.After?.Loss ?? double.NaN}");
        return 0;
    }

    /// <summary>
    /// Tokens per second of process CPU time over steps 2..n: on a machine shared with other builds, wall-clock rates swing
    /// with the load, CPU time much less, so two optimizers can still be compared.
    /// </summary>
    sealed class CpuPerStep : IProgressSink
    {
        readonly List<(TimeSpan Cpu, TimeSpan Wall, double Rate)> marks = new();
        readonly Stopwatch wall = Stopwatch.StartNew();
        public void Start(TrainingPlan plan) { }
        public void Step(StepRecord step) => marks.Add((Process.GetCurrentProcess().TotalProcessorTime, wall.Elapsed, step.TokensPerSecond));
        public void Eval(EvalRecord eval) { }
        public void Message(string text) { }
        public void End(TrainingResult result) { }

        /// <summary>Steps 2..n: each step's tokens (its wall-clock rate times its wall time) over the CPU time they took.</summary>
        public double TokensPerCpuSecond()
        {
            if (marks.Count < 2) return 0;
            double tokens = 0;
            for (var i = 1; i < marks.Count; i++) tokens += marks[i].Rate * (marks[i].Wall - marks[i - 1].Wall).TotalSeconds;
            return tokens / (marks[^1].Cpu - marks[0].Cpu).TotalSeconds;
        }
    }

    sealed record Result(string Trainable, double TokensPerSecond, double PeakMiB, double Before, double After, string? Error);

    static Result Child(string method, int steps, bool bf16, string optim = "auto", bool cpu = false)
    {
        var (f, error) = ChildRun.Run([ChildVerb, method, steps.ToString(), bf16 ? "bf16" : "f32", optim, cpu ? "cpu" : "wall"]);
        return f is null ? new Result("", 0, 0, 0, 0, error) : new Result(f[0], ChildRun.Number(f[1]), ChildRun.Number(f[2]), ChildRun.Number(f[3]), ChildRun.Number(f[4]), null);
    }

    static int Steps(string[] args, int fallback) => args.Length > 1 && args[0] == "--steps" ? int.Parse(args[1]) : fallback;
}
