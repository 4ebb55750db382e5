using System.CommandLine;
using PeftSharp.Merging;
using PeftSharp.Models;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// <c>merge-models</c> with <c>merge_method: atlas</c>: the options only aTLAS reads, and its run (read the training
/// data, call <see cref="Atlas.Run(MergeConfig, PeftSharp.Data.BatchSource, string, AtlasOptions?, MergeOptions?, Action{int, double}?, Func{ILanguageModel, double}?)"/>, print a summary).
/// </summary>
internal sealed class MergeModelsAtlas
{
    public Option<string> TrainFile { get; } = new Option<string>("--train-file")
    {
        Description = "atlas: records to learn the coefficients on (any format train reads: text, prompt/completion, messages, input_ids)",
    }.Help(value: "<file>");

    public Option<int?> Steps { get; } = Options.WholeNumber("--steps", "atlas: Adam steps on the coefficients, one batch each (overrides parameters.steps)")
        .Must(s => s >= 1, "must be at least 1").Help(defaultText: "100");

    public Option<double?> LearningRate { get; } = Options.Number("--learning-rate", "atlas: Adam's step size on the coefficients (overrides parameters.learning_rate)")
        .Must(l => l is double x && x > 0 && double.IsFinite(x), "must be a positive number").Help(defaultText: "0.01");

    public Option<int?> MaxLength { get; } = Options.WholeNumber("--max-length", "atlas: tokens per training and held-out record")
        .Must(n => n >= 2, "must be at least 2").Help(defaultText: "512");

    /// <summary>The aTLAS options belong to atlas alone: with another method they would be ignored, so they are refused.</summary>
    public void RefuseFor(System.CommandLine.ParseResult parse, string method)
    {
        foreach (var option in new Option[] { TrainFile, Steps, LearningRate, MaxLength })
            if (parse.GetResult(option) is { Implicit: false })
                throw new ArgumentException($"{option.Name} is for merge_method: atlas, which learns its coefficients; merge_method '{method}' learns nothing: leave {option.Name} out");
    }

    public int Run(System.CommandLine.ParseResult parse, MergeConfig merge, string outDir, MergeOptions options, long? seed, string? evalFile, bool quiet)
    {
        var stdout = parse.InvocationConfiguration.Output;
        var trainFile = parse.GetValue(TrainFile)
            ?? throw new ArgumentException("merge_method: atlas learns its coefficients from data: give --train-file <file> (records in any format train reads)");
        if (!File.Exists(trainFile)) throw new FileNotFoundException($"--train-file {trainFile}: no such file (atlas's training data)", trainFile);
        if (evalFile is not null && !File.Exists(evalFile)) throw new FileNotFoundException($"--eval-file {evalFile}: no such file (atlas's held-out data)", evalFile);
        Atlas.Check(merge);
        var o = Atlas.OptionsOf(merge);
        o = o with
        {
            Steps = parse.GetValue(Steps) ?? o.Steps,
            LearningRate = parse.GetValue(LearningRate) ?? o.LearningRate,
            Seed = seed ?? o.Seed,
        };
        var (modelFolder, tokenizerFolder) = Folders(merge);
        var config = modelFolder is null ? null : ModelConfig.Load(modelFolder);
        int padId = config?.PadTokenId ?? 0, maxLength = parse.GetValue(MaxLength) ?? 512;
        var data = HeldOutLoss.Read(trainFile, tokenizerFolder, padId, maxLength, config?.VocabSize);
        var heldOut = evalFile is null ? null : new HeldOutLoss(evalFile, tokenizerFolder, padId, maxLength);
        int every = Math.Max(1, o.Steps / 10);
        var result = Atlas.Run(merge, data, outDir, o, options, (step, loss) =>
        {
            // the first step comes after every check of the inputs: a refused merge writes nothing to stdout
            if (step == 1) stdout.WriteLine($"atlas on {trainFile}: {data.Count} records, {o.Steps} steps (batch {o.BatchSize}, learning rate {o.LearningRate}, initial lambda {o.Initial})");
            if (!quiet && (step == 1 || step % every == 0 || step == o.Steps)) stdout.WriteLine($"  step {step}/{o.Steps}: loss {loss:F4}");
        }, heldOut is null ? null : heldOut.Of);

        foreach (var w in result.Merge.Warnings) parse.InvocationConfiguration.Error.WriteLine($"warning: {w}");
        var losses = result.Learned.Losses;
        stdout.WriteLine($"atlas learned {result.Learned.Coefficients.Count} tensors x {result.TaskModels.Count} task vectors in {losses.Count} steps: " +
            $"training loss {losses[0]:F4} -> {losses[^1]:F4} (the last before its step)");
        if (result.HeldOut is var (before, after))
            stdout.WriteLine($"held-out loss on {evalFile}: {before:F4} (base) -> {after:F4} (composed)");
        stdout.WriteLine($"wrote {result.Merge.Tensors} tensors ({result.Merge.BytesWritten / 1e9:F2} GB) and {Atlas.CoefficientsFile} into {result.Merge.OutputFolder}");
        return 0;
    }

    // The model folder whose config.json describes the data (vocabulary, pad id) and the first folder with a tokenizer:
    // base_model first, then the models, each as written and under the YAML's folder.
    static (string? Model, string? Tokenizer) Folders(MergeConfig merge)
    {
        var folders = new[] { merge.BaseModel }.Concat(merge.Models.Select(m => m.Model)).OfType<string>()
            .Select(p => p.Split('+')[0])
            .SelectMany(p => new[] { p, merge.BaseDirectory is { } d ? Path.Combine(d, p) : p })
            .Where(Directory.Exists).ToList();
        return (folders.FirstOrDefault(f => File.Exists(Path.Combine(f, "config.json"))),
            folders.FirstOrDefault(f => File.Exists(Path.Combine(f, "tokenizer.json"))));
    }
}
