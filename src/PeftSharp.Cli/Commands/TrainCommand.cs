using System.CommandLine;
using PeftSharp.Training;
using Spectre.Console;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// <c>peftsharp train</c>: every <see cref="TrainingOptions"/> key as a kebab-case flag (transformers' names), on top of
/// an optional YAML/JSON <c>--config</c>. With no arguments it fine-tunes the bundled model on the bundled data.
/// </summary>
internal static class TrainCommand
{
    static readonly Dictionary<string, string[]> Aliases = new()
    {
        ["per_device_train_batch_size"] = ["--batch-size"],
        ["num_train_epochs"] = ["--num-epochs", "--epochs"],
        ["lr_scheduler_type"] = ["--lr-scheduler"],
        ["resume_from_checkpoint"] = ["--resume"],
        ["lora_target_modules"] = ["--target-modules"],
        ["output_dir"] = ["--out"],
    };

    public static Command Create()
    {
        var config = new Option<string>("--config") { Description = "YAML or JSON file with any of the options below, by their snake_case names; flags given here override it" }.Help(value: "<file>");
        var noShuffle = new Option<bool>("--no-shuffle") { Description = "keep the data order (the same as --shuffle false)" };
        var cmd = new Command("train", "Fine-tune a model with an adapter. With no arguments at all: LoRA on the bundled tinycode-3m and " +
            "bundled JavaScript, with a quick preset (max length 128, learning rate 1e-3, bf16); the defaults below apply once any option is given.")
            { config, noShuffle };
        var flags = new List<(string Key, Option<string> Option)>();
        foreach (var (key, property, group) in TrainOptionsHelp.Keys())
        {
            var opt = new Option<string>("--" + key.Replace('_', '-')) { Arity = ArgumentArity.ZeroOrOne, Description = TrainOptionsHelp.Describe(key, property) };
            foreach (var alias in Aliases.GetValueOrDefault(key) ?? []) opt.Aliases.Add(alias);
            opt.Help(group, TrainOptionsHelp.Default(property), TrainOptionsHelp.ValueName(key, property));
            cmd.Options.Add(opt);
            flags.Add((key, opt));
        }
        cmd.SetAction(r =>
        {
            // With no arguments at all: the first-run preset, sized to finish in about two minutes on two CPU cores.
            bool firstRun = r.Tokens.All(t => t.Type == System.CommandLine.Parsing.TokenType.Command);
            var options = r.GetValue(config) is { } file ? TrainingOptionsFile.Load(file) : firstRun ? FirstRun : new TrainingOptions();
            foreach (var (key, opt) in flags)
                if (r.GetResult(opt) is not null) options = options.With(key, r.GetValue(opt));
            if (r.GetValue(noShuffle)) options = options with { Shuffle = false };
            return Run(options);
        });
        return cmd;
    }

    /// <summary>
    /// One epoch of the bundled data in 128-token rows, a bfloat16 base (tinycode ships bf16 weights) and LoRA r=8.
    /// Running the demo again starts it over in its own folder rather than refusing.
    /// </summary>
    static readonly TrainingOptions FirstRun = new()
    {
        MaxLength = 128, LearningRate = 1e-3, Bf16 = true, OutputDir = "peftsharp-first-run", SampleMaxNewTokens = 40, OverwriteOutputDir = true,
    };

    static int Run(TrainingOptions options)
    {
        var console = AnsiConsole.Console;
        var report = FineTune.Run(options, Options.BundledModel, Path.Combine(AppContext.BaseDirectory, "data", "first-run"),
            new TrainerHooks { Progress = ProgressSinks.ForConsole() }, m => console.MarkupLine($"[grey]{Markup.Escape(m)}[/]"));
        Summary(report, options);
        if (report.Result.Reason is StopReason.NonFinite or StopReason.Collapsed) Console.Error.WriteLine($"error: {report.Result.Message}");
        return report.Result.Reason == StopReason.Completed ? 0 : report.Result.Reason == StopReason.Interrupted ? 130 : 1;
    }

    static void Summary(FineTuneReport r, TrainingOptions o)
    {
        var table = new Table().AddColumns("", "before", "after");
        if (r.Before is { } b)
            table.AddRow("held-out loss", $"{b.Loss:F4}", r.After is { } a1 ? $"{a1.Loss:F4}" : "-");
        if (r.Before is { } b2)
            table.AddRow("perplexity", $"{b2.Perplexity:F2}", r.After is { } a2 ? $"{a2.Perplexity:F2}" : "-");
        if (table.Rows.Count > 0) AnsiConsole.Write(table);
        if (r.SamplePrompt is not null)
        {
            AnsiConsole.MarkupLine($"[bold]prompt[/]\n{Markup.Escape(r.SamplePrompt)}");
            AnsiConsole.MarkupLine($"[bold]before[/] {Markup.Escape(r.SampleBefore ?? "")}");
            AnsiConsole.MarkupLine($"[bold]after[/]  {Markup.Escape(r.SampleAfter ?? "(not trained to the end)")}");
        }
        if (r.Result.Reason is not (StopReason.NonFinite or StopReason.Collapsed)) AnsiConsole.MarkupLine(Markup.Escape(r.Result.Message));
        if (r.Result.AdapterDir is { } full && PeftSharp.Training.Layerwise.LayerwiseMethods.Handles(o.Method))
        {
            AnsiConsole.MarkupLine($"model (transformers format, all weights): [bold]{Markup.Escape(full)}[/]");
            if (r.Result.LossCurveFile is { } png) AnsiConsole.MarkupLine($"loss curve: {Markup.Escape(png)}");
            AnsiConsole.MarkupLine($"use it: [bold]peftsharp generate --model {Markup.Escape(full)} --prompt \"function add(a, b) {{\"[/]");
        }
        else if (r.Result.AdapterDir is { } dir)
        {
            AnsiConsole.MarkupLine($"adapter (PEFT format): [bold]{Markup.Escape(dir)}[/]");
            if (r.Result.LossCurveFile is { } png) AnsiConsole.MarkupLine($"loss curve: {Markup.Escape(png)}");
            var model = o.Model is null ? "" : $" --model {o.Model}";
            AnsiConsole.MarkupLine($"use it: [bold]peftsharp generate{Markup.Escape(model)} --adapter {Markup.Escape(dir)} --prompt \"function add(a, b) {{\"[/]");
            AnsiConsole.MarkupLine($"or fold it into the weights: peftsharp merge --model {Markup.Escape(r.ModelDir)} --adapter {Markup.Escape(dir)} --out merged");
        }
    }
}
