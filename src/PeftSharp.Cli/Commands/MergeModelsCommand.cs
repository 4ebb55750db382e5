using System.CommandLine;
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
        var config = new Option<string>("--config", "-c") { Description = "mergekit-style YAML (merge_method, base_model, models, parameters)", Required = true }.Help(value: "<file>");
        var output = new Option<string>("--out", "-o") { Description = "output folder (created, or its weights replaced)", Required = true }.Help(value: "<dir>");
        var allowCrimes = new Option<bool>("--allow-crimes") { Description = "merge models whose config.json names different architectures" };
        var allowMissing = new Option<bool>("--allow-missing") { Description = "merge a tensor missing from some models from those that have it" };
        var shardSize = Options.MaxShardSize();
        var seed = Options.Seed("seed for DARE's random pruning").Alias("--random-seed").Help(defaultText: "0");
        var noTokenizer = new Option<bool>("--no-copy-tokenizer") { Description = "do not copy tokenizer files into the output" };
        var adapterRank = Options.WholeNumber("--adapter-rank", "write a LoRA adapter of this rank instead of full weights (overrides adapter_output.r)")
            .Must(r => r >= 1, "must be at least 1");
        var quiet = new Option<bool>("--quiet", "-q") { Description = "no progress bar" };

        var command = new Command("merge-models", $"Merge models and LoRA adapters as mergekit does (merge_method: {string.Join(", ", PeftSharp.Merging.MergeMethods.Names)}; LiNeS)")
        {
            config, output, allowCrimes, allowMissing, shardSize, seed, noTokenizer, adapterRank, quiet,
        };
        command.SetAction(parse =>
        {
            var (stdout, stderr) = (parse.InvocationConfiguration.Output, parse.InvocationConfiguration.Error);
            var outDir = Path.GetFullPath(parse.GetRequiredValue(output));
            Options.CheckOutputFolder("--out", parse.GetRequiredValue(output));
            var merge = MergeConfigYaml.Load(Path.GetFullPath(parse.GetRequiredValue(config)));
            if (parse.GetValue(adapterRank) is int r)
                merge = merge with { AdapterOutput = (merge.AdapterOutput ?? new AdapterOutputConfig(r)) with { R = r } };
            var options = new MergeOptions
            {
                AllowCrimes = parse.GetValue(allowCrimes),
                AllowMissing = parse.GetValue(allowMissing),
                MaxShardBytes = parse.GetValue(shardSize),
                RandomSeed = parse.GetValue(seed) ?? 0,
                CopyTokenizer = !parse.GetValue(noTokenizer),
            };
            // The progress bar draws on the terminal itself; elsewhere (quiet, redirected, in-process) the merge runs plain.
            bool progress = !parse.GetValue(quiet) && stdout == Console.Out && !Console.IsOutputRedirected;
            var result = progress ? RunWithProgress(merge, outDir, options) : ModelMerger.Run(merge, outDir, options);
            foreach (var w in result.Warnings) stderr.WriteLine($"warning: {w}");
            stdout.WriteLine($"merged {result.Tensors} tensors ({result.BytesWritten / 1e9:F2} GB) into {result.OutputFolder}");
            return 0;
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
}
