using System.CommandLine;
using System.Globalization;
using PeftSharp.Merging;
using Spectre.Console;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// <c>peftsharp merge-models --config merge.yaml --out DIR</c>: mergekit's YAML, merged tensor by tensor.
/// Parses options, builds a <see cref="MergeConfig"/> and <see cref="MergeOptions"/>, calls <see cref="ModelMerger"/>.
/// </summary>
internal static class MergeModelsCommand
{
    public static Command Create()
    {
        var config = new Option<FileInfo>("--config", "-c") { Description = "mergekit-style YAML (merge_method, base_model, models, parameters)", Required = true };
        var output = new Option<DirectoryInfo>("--out", "-o") { Description = "output folder (created, or its weights replaced)", Required = true };
        var allowCrimes = new Option<bool>("--allow-crimes") { Description = "merge models whose config.json names different architectures" };
        var allowMissing = new Option<bool>("--allow-missing") { Description = "merge a tensor missing from some models from those that have it" };
        var shardSize = new Option<string>("--out-shard-size") { Description = "largest output shard, e.g. 5B, 500M (bytes; K, M, B/G suffixes)", DefaultValueFactory = _ => "5B" };
        var seed = new Option<long>("--random-seed") { Description = "seed for DARE's random pruning", DefaultValueFactory = _ => 0 };
        var noTokenizer = new Option<bool>("--no-copy-tokenizer") { Description = "do not copy tokenizer files into the output" };
        var adapterRank = new Option<int?>("--adapter-rank") { Description = "write a LoRA adapter of this rank instead of full weights (overrides adapter_output.r)" };
        var quiet = new Option<bool>("--quiet", "-q") { Description = "no progress bar" };

        var command = new Command("merge-models", "Merge models and LoRA adapters (linear, task_arithmetic, ties, dare, breadcrumbs, slerp, model_stock; LiNeS)")
        {
            config, output, allowCrimes, allowMissing, shardSize, seed, noTokenizer, adapterRank, quiet,
        };
        command.SetAction(parse =>
        {
            try
            {
                var merge = MergeConfigYaml.Load(parse.GetRequiredValue(config).FullName);
                if (parse.GetValue(adapterRank) is int r)
                    merge = merge with { AdapterOutput = (merge.AdapterOutput ?? new AdapterOutputConfig(r)) with { R = r } };
                var options = new MergeOptions
                {
                    AllowCrimes = parse.GetValue(allowCrimes),
                    AllowMissing = parse.GetValue(allowMissing),
                    MaxShardBytes = ParseSize(parse.GetValue(shardSize)!),
                    RandomSeed = parse.GetValue(seed),
                    CopyTokenizer = !parse.GetValue(noTokenizer),
                };
                var outDir = parse.GetRequiredValue(output).FullName;
                var result = parse.GetValue(quiet) ? ModelMerger.Run(merge, outDir, options) : RunWithProgress(merge, outDir, options);
                foreach (var w in result.Warnings) AnsiConsole.MarkupLineInterpolated($"[yellow]warning:[/] {w}");
                AnsiConsole.MarkupLineInterpolated($"merged {result.Tensors} tensors ({result.BytesWritten / 1e9:F2} GB) into {result.OutputFolder}");
                return 0;
            }
            catch (Exception e) when (e is MergeException or FormatException)
            {
                AnsiConsole.MarkupLineInterpolated($"[red]error:[/] {e.Message}");
                return 1;
            }
        });
        return command;
    }

    static MergeResult RunWithProgress(MergeConfig config, string outDir, MergeOptions options)
    {
        MergeResult? result = null;
        AnsiConsole.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn(), new SpinnerColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask("merging", maxValue: 1);
                result = ModelMerger.Run(config, outDir, options with
                {
                    Progress = p =>
                    {
                        task.MaxValue = Math.Max(1, p.BytesTotal);
                        task.Value = p.BytesDone;
                        task.Description = $"{p.Done}/{p.Total} {Markup.Escape(Shorten(p.Tensor))}";
                    },
                });
            });
        return result!;
    }

    static string Shorten(string name) => name.Length <= 48 ? name : "…" + name[^47..];

    /// <summary>mergekit's size strings: a number with an optional K, M, B or G suffix (powers of 1000).</summary>
    internal static long ParseSize(string text)
    {
        var t = text.Trim().ToUpperInvariant();
        long unit = t.EndsWith('K') ? 1_000 : t.EndsWith('M') ? 1_000_000 : t.EndsWith('B') || t.EndsWith('G') ? 1_000_000_000 : 1;
        var number = unit == 1 ? t : t[..^1];
        if (!double.TryParse(number, NumberStyles.Float, CultureInfo.InvariantCulture, out var n) || n <= 0)
            throw new FormatException($"--out-shard-size '{text}' is not a size such as 5B, 500M or 2000000");
        return (long)(n * unit);
    }
}
