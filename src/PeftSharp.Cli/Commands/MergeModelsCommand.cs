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
        var seed = Options.Seed("seed for DARE's random pruning; atlas: of the batch order (default: parameters.seed, else 42)").Alias("--random-seed").Help(defaultText: "0");
        var noTokenizer = new Option<bool>("--no-copy-tokenizer") { Description = "do not copy tokenizer files into the output" };
        var adapterRank = Options.WholeNumber("--adapter-rank", "write a LoRA adapter of this rank instead of full weights (overrides adapter_output.r)")
            .Must(r => r >= 1, "must be at least 1");
        var quiet = new Option<bool>("--quiet", "-q") { Description = "no progress bar (atlas: no lines per step)" };
        var evalFile = new Option<string>("--eval-file")
        {
            Description = "greedy soup (merge_method: linear): add the models best first, each only if the held-out loss on this file does not rise; " +
                "atlas: report the held-out loss before and after",
        }.Help(value: "<file>");

        var atlas = new MergeModelsAtlas();
        var command = new Command("merge-models", $"Merge models and LoRA adapters as mergekit does (merge_method: {string.Join(", ", PeftSharp.Merging.MergeMethods.Names)}; LiNeS)")
        {
            config, output, allowCrimes, allowMissing, shardSize, seed, noTokenizer, adapterRank, quiet, evalFile,
            atlas.TrainFile, atlas.Steps, atlas.LearningRate, atlas.MaxLength,
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
            if (merge.MergeMethod == "atlas")
                return atlas.Run(parse, merge, outDir, options, parse.GetValue(seed), parse.GetValue(evalFile), parse.GetValue(quiet));
            atlas.RefuseFor(parse, merge.MergeMethod);
            if (parse.GetValue(evalFile) is { } held)
                return File.Exists(held) ? GreedySoupRun(merge, held, outDir, options, stdout)
                    : throw new FileNotFoundException($"--eval-file {held}: no such file (the held-out data of the greedy soup)");
            // The progress bar draws on the terminal itself; elsewhere (quiet, redirected, in-process) the merge runs plain.
            bool progress = !parse.GetValue(quiet) && stdout == Console.Out && !Console.IsOutputRedirected;
            var result = progress ? RunWithProgress(merge, outDir, options) : ModelMerger.Run(merge, outDir, options);
            foreach (var w in result.Warnings) stderr.WriteLine($"warning: {w}");
            stdout.WriteLine($"merged {result.Tensors} tensors ({result.BytesWritten / 1e9:F2} GB) into {result.OutputFolder}");
            return 0;
        });
        return command;
    }

    static int GreedySoupRun(MergeConfig merge, string evalFile, string outDir, MergeOptions options, TextWriter stdout)
    {
        var loss = new HeldOutLoss(evalFile, TokenizerFolder(merge), padId: 0);
        stdout.WriteLine($"greedy soup on {evalFile}: {loss.Rows} rows, {loss.Tokens} held-out tokens");
        var result = GreedySoup.Run(merge, loss.Of, outDir, options, line => stdout.WriteLine("  " + line));
        stdout.WriteLine($"greedy soup kept {result.Kept.Count} of {result.Steps.Count}: {string.Join(", ", result.Kept)} (held-out loss {result.Loss:F4})");
        stdout.WriteLine($"merged {result.Merge.Tensors} tensors ({result.Merge.BytesWritten / 1e9:F2} GB) into {result.Merge.OutputFolder}");
        return 0;
    }

    // the held-out text is tokenised with the first model folder that has a tokenizer
    static string? TokenizerFolder(MergeConfig merge) => merge.Models
        .Select(m => m.Model.Split('+')[0])
        .SelectMany(p => new[] { p, merge.BaseDirectory is { } d ? Path.Combine(d, p) : p })
        .FirstOrDefault(p => File.Exists(Path.Combine(p, "tokenizer.json")));

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
