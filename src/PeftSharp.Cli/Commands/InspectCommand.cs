using System.CommandLine;
using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tuners;
using PeftSharp.Tuners.Lora;
using Spectre.Console;

namespace PeftSharp.Cli.Commands;

/// <summary><c>peftsharp inspect DIR</c>: what a model or adapter folder holds.</summary>
internal static class InspectCommand
{
    public static Command Create()
    {
        var dir = new Argument<string>("dir") { Description = "a model folder or a PEFT adapter folder" };
        var cmd = new Command("inspect", "Describe a model or adapter folder") { dir };
        cmd.SetAction(r =>
        {
            var path = r.GetValue(dir)!;
            if (!Directory.Exists(path)) throw new DirectoryNotFoundException($"{path}: no such folder");
            var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(r.InvocationConfiguration.Output) });
            console.Write(File.Exists(Path.Combine(path, PeftConfigJson.FileName)) ? InspectAdapter(path) : InspectModel(path));
            return 0;
        });
        return cmd;
    }

    static Table InspectModel(string path)
    {
        var config = ModelConfig.Load(path);
        using var ckpt = Checkpoint.Open(path);
        var infos = ckpt.Names.Select(ckpt.Info).ToList();
        var table = new Table().AddColumns("property", "value").HideHeaders();
        table.AddRow("architecture", config.Architecture);
        table.AddRow("model type", config.ModelType);
        table.AddRow("layers x hidden", $"{config.NumLayers} x {config.HiddenSize}");
        table.AddRow("heads (kv heads) x dim", $"{config.NumHeads} ({config.NumKvHeads}) x {config.HeadDim}");
        table.AddRow("vocabulary", config.VocabSize.ToString("N0"));
        table.AddRow("parameters", infos.Sum(i => i.Shape.Aggregate(1L, (a, b) => a * b)).ToString("N0"));
        table.AddRow("dtypes", string.Join(", ", infos.GroupBy(i => i.DType).Select(g => $"{g.Key} ({g.Count()} tensors)")));
        table.AddRow("size on disk", $"{infos.Sum(i => i.ByteLength) / 1e6:F1} MB in {ckpt.Files.Count} file(s)");
        var tok = Path.Combine(path, "tokenizer.json");
        if (File.Exists(tok))
        {
            var t = Tokenization.HfTokenizer.Load(path);
            table.AddRow("tokenizer", $"{t.VocabSize:N0} tokens; bos {t.BosToken ?? "-"}, eos {t.EosToken ?? "-"}, pad {t.PadToken ?? "-"}");
        }
        else table.AddRow("tokenizer", "none (no tokenizer.json)");
        return table;
    }

    static Table InspectAdapter(string path)
    {
        var config = PeftConfigJson.Load(Path.Combine(path, PeftConfigJson.FileName));
        using var file = SafetensorsFile.Open(Path.Combine(path, PeftModel.WeightsFile));
        var table = new Table().AddColumns("property", "value").HideHeaders();
        table.AddRow("method", config.PeftType);
        table.AddRow("task", config.TaskType ?? "-");
        table.AddRow("base model", config.BaseModelNameOrPath ?? "-");
        if (config is LayerTunerConfig lt) table.AddRow("targets", Markup.Escape(lt.TargetModules?.ToString() ?? "-"));
        if (config is LoraConfig lc)
        {
            var variants = new[] { lc.UseRslora ? "rsLoRA" : null, lc.UseDora ? "DoRA" : null }.Where(v => v is not null);
            table.AddRow("rank / alpha", $"r={lc.R}, alpha={lc.LoraAlpha}" + (lc.RankPattern.Count > 0 ? $", rank_pattern {lc.RankPattern.Count} entries" : "") +
                (variants.Any() ? $" ({string.Join(", ", variants)})" : ""));
            var modules = file.Names.Where(n => n.EndsWith(".lora_A.weight")).Select(n => file.Info(n).Shape[0]).ToList();
            if (modules.Count > 0) table.AddRow("ranks", string.Join(", ", modules.GroupBy(r => r).Select(g => $"{g.Key} x {g.Count()} modules")));
        }
        table.AddRow("tensors", file.Names.Count.ToString());
        table.AddRow("trainable parameters", file.Tensors.Values.Sum(i => i.Shape.Aggregate(1L, (a, b) => a * b)).ToString("N0"));
        return table;
    }
}
