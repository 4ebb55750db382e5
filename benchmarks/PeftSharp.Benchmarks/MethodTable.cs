using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using PeftSharp.Training;

namespace PeftSharp.Benchmarks;

/// <summary>
/// <c>methods [--steps 20] [--methods "lora,pissa,lora --optim adamw_torch,increlora"] [--bf16]</c>: one row per method on
/// tinycode-3m with the bundled first-run data, same steps, seed, batch and learning rate, each in its own process so
/// that its peak RSS is its own. A row is a <c>--method</c> name (any preset, or lisa/hft) followed by any <c>train</c>
/// options for that row only (<c>--optim X</c>, <c>--lora-r 16</c>, <c>--adapter-config FILE</c>, ...), so methods
/// added later plug in by name. Without <c>--methods</c>: every preset but bitfit (tinycode has no biases), then LISA and HFT.
/// </summary>
internal static class MethodTable
{
    public const string ChildVerb = "_method-row";

    public static int Run(string[] args)
    {
        int steps = 20;
        bool bf16 = false;
        var rows = Methods.Names.Where(m => m != "bitfit").Concat(["lisa", "hft"]).ToList();
        for (int i = 0; i < args.Length; i++)
            switch (args[i])
            {
                case "--steps" when i + 1 < args.Length: steps = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--methods" when i + 1 < args.Length: rows = args[++i].Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToList(); break;
                case "--bf16": bf16 = true; break;
                default:
                    Console.Error.WriteLine($"methods: unknown argument '{args[i]}'; usage: methods [--steps N] [--methods \"lora,pissa,lora --optim adamw_torch\"] [--bf16]");
                    return 2;
            }
        Console.WriteLine($"tinycode-3m, bundled first-run data, {steps} steps, batch 8 x 128 tokens, lr 1e-3 constant, seed 42, " +
            $"{(bf16 ? "bfloat16" : "float32")} base, r 8 / alpha 16 on all-linear where the method has them, CPU {Environment.ProcessorCount} cores");
        Console.WriteLine($"| method | trainable params | held-out loss before | after {steps} steps | wall s | tokens/s | peak RSS MiB |");
        Console.WriteLine("|---|---|---|---|---|---|---|");
        foreach (var row in rows)
        {
            var r = Child(row, steps, bf16);
            Console.WriteLine(r.Error is null
                ? FormattableString.Invariant($"| {row} | {r.Trainable} | {r.Before:F4} | {r.After:F4} | {r.WallSeconds:F1} | {r.TokensPerSecond:N0} | {r.PeakMiB:N0} |")
                : $"| {row} | failed: {r.Error} | | | | | |");
        }
        return 0;
    }

    /// <summary>The child: <c>_method-row STEPS f32|bf16 METHOD [--option value ...]</c>, one RESULT line (or ERROR).</summary>
    public static int RunOne(string[] args)
    {
        try
        {
            var options = new TrainingOptions
            {
                Method = args[2], MaxSteps = int.Parse(args[0], CultureInfo.InvariantCulture), MaxLength = 128, PerDeviceTrainBatchSize = 8,
                LearningRate = 1e-3, WarmupRatio = 0, LrSchedulerType = "constant", OutputDir = null, SampleMaxNewTokens = 0,
                Bf16 = args[1] == "bf16", SamplePrompt = "",
            };
            for (int i = 3; i < args.Length; i++)
            {
                var key = args[i];
                if (!key.StartsWith("--", StringComparison.Ordinal)) throw new ArgumentException($"'{key}' is not an option (--name [value])");
                var value = i + 1 < args.Length && !args[i + 1].StartsWith("--", StringComparison.Ordinal) ? args[++i] : null;
                options = options.With(key, value);
            }
            var model = Measure.ModelDir("tinycode-3m");
            var data = Path.Combine(Path.GetDirectoryName(model)!, "..", "data", "first-run");
            var clock = Stopwatch.StartNew();
            var report = FineTune.Run(options, model, data, new TrainerHooks { HandleCtrlC = false });
            var wall = clock.Elapsed.TotalSeconds;
            if (report.Result.Reason != StopReason.Completed) throw new InvalidOperationException(report.Result.Message);
            var tps = report.Result.Steps.Skip(1).Select(s => s.TokensPerSecond).DefaultIfEmpty(0).Average();
            var trainable = Regex.Match(report.TrainableSummary, @"trainable params: ([\d,]+)") is { Success: true } m ? m.Groups[1].Value
                : report.TrainableSummary.Split('\n')[0];
            Console.WriteLine(FormattableString.Invariant($"RESULT\t{trainable}\t{tps}\t{Measure.PeakRssMiB()}\t{report.Before?.Loss}\t{report.After?.Loss}\t{wall}"));
            return 0;
        }
        catch (Exception e)
        {
            Console.WriteLine($"ERROR\t{e.Message.Split('\n')[0]}");
            return 1;
        }
    }

    sealed record Result(string Trainable, double TokensPerSecond, double PeakMiB, double Before, double After, double WallSeconds, string? Error);

    static Result Child(string row, int steps, bool bf16)
    {
        var (f, error) = ChildRun.Run([ChildVerb, steps.ToString(CultureInfo.InvariantCulture), bf16 ? "bf16" : "f32", .. row.Split(' ', StringSplitOptions.RemoveEmptyEntries)]);
        return f is null ? new Result("", 0, 0, 0, 0, 0, error) : new Result(f[0], ChildRun.Number(f[1]), ChildRun.Number(f[2]), ChildRun.Number(f[3]), ChildRun.Number(f[4]), ChildRun.Number(f[5]), null);
    }
}
