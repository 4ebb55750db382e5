using System.CommandLine;
using PeftSharp.Data;
using PeftSharp.Models;
using PeftSharp.Tokenization;
using PeftSharp.Training;
using PeftSharp.Tuners;
using PeftSharp.Tuners.SparseFt.Graft;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// <c>peftsharp graft</c>: skill localization by grafting (Panigrahi et al. 2023): learn the few entries of a fine-tuned
/// model that, grafted onto its base, recover the fine-tuned loss on the given data; writes them as a sparse delta
/// (SPARSE_FT, method "graft") that loads, merges and composes like any sparse adapter.
/// </summary>
internal static class GraftCommand
{
    public static Command Create()
    {
        var model = Options.Model();
        var tuned = new Option<string>("--tuned") { Description = "the fine-tuned model (same architecture as --model) whose skill is localised", Required = true }.Help(value: "<dir>");
        var data = new Option<string>("--data") { Description = "task records (any format train reads) the graft must keep the fine-tuned loss on", Required = true }.Help(value: "<file>");
        var output = new Option<string>("--out") { Description = "folder for the sparse adapter", Required = true }.Help(value: "<dir>");
        var density = Options.Number("--density", "share of each target weight's entries grafted: ceil(density x numel)")
            .Must(d => d > 0 && d <= 1, "must be in (0, 1]").Help(defaultText: "0.01");
        var steps = Options.WholeNumber("--steps", "mask updates, one micro-batch each").Must(s => s >= 0, "must be 0 or more").Help(defaultText: "100");
        var lr = Options.Number("--learning-rate", "Adam's step on the mask logits").Must(l => l > 0, "must be positive").Help(defaultText: "0.5");
        var targets = new Option<string[]>("--target-modules") { Description = "weights that may be grafted (module names or all-linear)", AllowMultipleArgumentsPerToken = true }.Help(defaultText: "all-linear", value: "<names>");
        var maxLength = Options.WholeNumber("--max-length", "tokens per record").Must(n => n >= 2, "must be at least 2").Help(defaultText: "256");
        var seed = Options.Seed("seed of the mask search's batch order");
        var cmd = new Command("graft", "Localise a fine-tuned model's skill: learn a sparse graft onto the base that keeps its loss")
            { model, tuned, data, output, density, steps, lr, targets, maxLength, seed };
        cmd.SetAction(r =>
        {
            var (modelDir, tunedDir, dataPath, outDir) = (r.GetValue(model)!, r.GetValue(tuned)!, r.GetValue(data)!, r.GetValue(output)!);
            foreach (var (option, dir) in new[] { ("--model", modelDir), ("--tuned", tunedDir) })
                if (!Directory.Exists(dir)) throw new DirectoryNotFoundException($"{option} {dir}: no such folder");
            if (!File.Exists(dataPath)) throw new FileNotFoundException($"--data {dataPath}: no such file", dataPath);
            Options.CheckOutputFolder("--out", outDir);
            var baseModel = AutoModel.Load(modelDir);
            var tunedModel = AutoModel.Load(tunedDir);
            var tok = File.Exists(Path.Combine(modelDir, "tokenizer.json"))
                ? FineTune.TokenizerFunctionsFor(HfTokenizer.Load(modelDir), "causal_lm")
                : TokenizerFunctions.None(baseModel.Config.PadTokenId ?? 0, $"{modelDir} has no tokenizer.json");
            var records = TrainingDataset.Load(new DataOptions
            {
                TrainPath = dataPath, EvalRatio = 0, MaxLength = r.GetValue(maxLength) ?? 256, VocabSize = baseModel.Config.VocabSize,
            }, tok).Train;
            var o = new GraftOptions
            {
                Density = r.GetValue(density) ?? 0.01, Steps = r.GetValue(steps) ?? 100, LearningRate = r.GetValue(lr) ?? 0.5,
                TargetModules = r.GetValue(targets) is { Length: > 0 } t ? ModuleSelector.Of(t) : ModuleSelector.Of("all-linear"),
                Seed = r.GetValue(seed) ?? 0,
            };
            var stdout = r.InvocationConfiguration.Output;
            var graft = Grafting.Learn(baseModel, tunedModel, records, o,
                (step, loss) => { if (step == 1 || step % 10 == 0 || step == o.Steps) stdout.WriteLine($"step {step}: graft loss {loss:F4}"); });
            graft.Save(outDir);
            stdout.WriteLine($"graft of {tunedDir} onto {modelDir} ({o.Density} of each target weight) written to {outDir}");
            return 0;
        });
        return cmd;
    }
}
