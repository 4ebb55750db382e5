using PeftSharp.Data;
using PeftSharp.Generation;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tokenization;
using PeftSharp.Tuners;
using static TorchSharp.torch;

namespace PeftSharp.Training;

/// <summary>What a fine-tuning run reports: held-out loss and a sample before and after, and where things went.</summary>
public sealed record FineTuneReport(string ModelDir, string DataPath, DataReport Data, string TrainableSummary,
    EvalRecord? Before, EvalRecord? After, string? SamplePrompt, string? SampleBefore, string? SampleAfter, TrainingResult Result);

/// <summary>
/// The whole recipe behind <c>peftsharp train</c>, readable top to bottom: load the model and tokenizer, tokenise the
/// data, attach an adapter, train, and show the difference it made.
/// </summary>
public static class FineTune
{
    /// <summary>Builds the adapter the options ask for, or loads <see cref="TrainingOptions.InitAdapter"/> to continue it.</summary>
    public static Func<PretrainedModel, TrainingOptions, PeftModel> AdapterFactory { get; set; } = DefaultAdapter;

    /// <param name="defaultDataDir">used when no train file is given: its train.jsonl, with eval.jsonl held out.</param>
    public static FineTuneReport Run(TrainingOptions o, string defaultModelDir, string defaultDataDir, TrainerHooks hooks, Action<string>? log = null)
    {
        if (o.TrainFile is null)
            o = o with { TrainFile = Path.Combine(defaultDataDir, "train.jsonl"), EvalFile = o.EvalFile ?? Path.Combine(defaultDataDir, "eval.jsonl") };
        o = o.Validate();
        log ??= _ => { };
        var modelDir = o.Model ?? defaultModelDir;
        var dataPath = o.TrainFile!;

        // 1. Model and tokenizer. Adapter weights stay float32 even over a bfloat16 base.
        var device = Devices.Parse(o.Device, "option device");
        var model = AutoModel.Load(modelDir, o.Bf16 ? ScalarType.BFloat16 : ScalarType.Float32, device);
        if (o.GradientCheckpointing) model.GradientCheckpointing = true;
        // Token-id data needs no tokenizer: without tokenizer.json, such data trains and the text sample is left out.
        var tokenizer = File.Exists(Path.Combine(modelDir, "tokenizer.json")) ? HfTokenizer.Load(modelDir) : null;
        var noTokenizer = $"{modelDir} has no tokenizer.json";
        log($"model {modelDir}: {model.Config.Architecture}, {model.ParameterCount():N0} parameters on {device}");

        // 2. Data, tokenised with the model's own tokenizer (and chat template, for chat records), every record checked
        //    against the model before anything is written.
        var tokenizerFunctions = tokenizer is null
            ? TokenizerFunctions.None(model.Config.PadTokenId ?? model.Config.EosTokenIds.FirstOrDefault(), noTokenizer)
            : TokenizerFunctionsFor(tokenizer, o.Task);
        var dataset = TrainingDataset.Load(o.DataOptions(dataPath) with { VocabSize = model.Config.VocabSize }, tokenizerFunctions);
        log($"data {dataPath}: {dataset.Report.TrainRows} training rows, {dataset.Report.EvalRows} held-out rows, {dataset.Report.TrainTokens:N0} training tokens");
        if (dataset.Report.BadRecords > 0)
            log($"skipped {dataset.Report.BadRecords} bad record(s) (--skip-bad-records), the first: " + string.Join("; ", dataset.Report.BadExamples.Take(3)));

        // 3. The adapter, initialised from the run's seed so that a run is reproducible; or, for the layer-wise
        //    full-parameter methods (Training/Layerwise), the base model itself, a changing set of its layers trainable.
        TorchSharp.torch.manual_seed(o.Seed);
        ILanguageModel tuned;
        TrainableModel trainable;
        Func<string> summary;
        if (Layerwise.LayerwiseMethods.Handles(o.Method))
        {
            var (layerwise, description) = Layerwise.LayerwiseMethods.Trainable(model, o, modelDir);
            (tuned, trainable, summary) = (model, layerwise, () => description);
        }
        else
        {
            var peft = AdapterFactory(model, o with { MaxSteps = TotalSteps(o, dataset) });
            // Data-aware inits (EVA, CorDA, LoRA-GA) see the first training batches before the first step.
            if (o.InitAdapter is null && Calibration.Needed(peft))
            {
                var batches = Calibration.FirstBatches(dataset.Train, o);
                log($"calibrating the adapter's initialisation on {batches.Count} training batch(es)");
                Calibration.Run(peft, batches, o.Task);
                foreach (var b in batches) b.Dispose();
            }
            (tuned, trainable, summary) = (peft, Methods.Trainable(peft, o.Task), peft.TrainableParametersSummary);
        }
        log(summary());

        // 4. Before: a sample generation (held-out loss comes from the trainer's step-0 evaluation).
        var prompt = o.Task != "causal_lm" ? null : tokenizer is null ? null : o.SamplePrompt ?? DefaultPrompt(o.EvalFile ?? dataPath);
        if (o.Task == "causal_lm" && tokenizer is null) log($"no before/after sample: {noTokenizer} to turn text into ids and back");
        // Methods that route by task (Poly) sample as the first held-out row's task.
        var sampleTask = (dataset.Eval ?? dataset.Train).Rows[0].TaskId;
        var sampleBefore = prompt is null ? null : SampleAsTask(tuned, sampleTask, () => Sample(tuned, tokenizer!, prompt, o.SampleMaxNewTokens));

        // 5. Train.
        var result = Trainer.Run(trainable, dataset.Train, dataset.Eval, o, hooks);

        // 6. After.
        var sampleAfter = prompt is null || result.Reason != StopReason.Completed ? null
            : SampleAsTask(tuned, sampleTask, () => Sample(tuned, tokenizer!, prompt, o.SampleMaxNewTokens));
        return new FineTuneReport(modelDir, dataPath, dataset.Report, summary(),
            result.Evals.FirstOrDefault(e => e.Step == 0), result.Evals.LastOrDefault(e => e.Step > 0),
            prompt, sampleBefore, sampleAfter, result);
    }

    // o.MaxSteps here is the run's total optimizer steps.
    static PeftModel DefaultAdapter(PretrainedModel model, TrainingOptions o) =>
        o.InitAdapter is { } dir ? PeftModel.FromPretrained(model, dir, isTrainable: true)
            : PeftModel.Create(model, Methods.ConfigFor(o, model.Config, o.MaxSteps));

    static int TotalSteps(TrainingOptions o, TrainingDataset data)
    {
        if (o.MaxSteps > 0) return o.MaxSteps;
        int micro = data.Train.MicroBatchesPerEpoch(o.PerDeviceTrainBatchSize);
        return (int)Math.Ceiling(o.NumTrainEpochs * Math.Ceiling((double)micro / o.GradientAccumulationSteps));
    }

    /// <summary>The data pipeline's view of a tokenizer. Classifiers get [CLS]/[SEP] from the tokenizer itself.</summary>
    public static TokenizerFunctions TokenizerFunctionsFor(HfTokenizer t, string task)
    {
        if (task == "seq_cls") return new TokenizerFunctions(s => t.Encode(s, addSpecialTokens: true), null, null, t.PadId ?? 0);
        // Parsed on the first chat, so a template the interpreter cannot run does not stop text-only training.
        var template = new Lazy<ChatTemplate>(() => ChatTemplate.For(t));
        Data.ChatRenderer? chat = !ChatTemplate.Exists(t) ? null : messages =>
        {
            var rendered = template.Value.RenderWithSpans(messages.Select(m => new Tokenization.ChatMessage(m.Role, m.Content)).ToList(), addGenerationPrompt: false);
            return new Data.RenderedChat(rendered.Text, rendered.AssistantSpans.Select(s => (s.Start, s.Length)).ToList());
        };
        return new TokenizerFunctions(s => t.Encode(s, addSpecialTokens: false), t.BosId, t.EosId, t.PadId ?? t.EosId ?? 0, chat);
    }

    static string SampleAsTask(ILanguageModel model, long? task, Func<string> sample)
    {
        if (model is not PeftModel peft || task is not { } t) return sample();
        using var ids = TorchSharp.torch.tensor(new[] { t });
        using var _ = peft.Routing.Use(ids);
        return sample();
    }

    /// <summary>Greedy continuation of <paramref name="prompt"/>, without the prompt.</summary>
    public static string Sample(ILanguageModel model, HfTokenizer t, string prompt, int maxNewTokens)
    {
        var ids = t.Encode(prompt, addSpecialTokens: false);
        if (t.BosId is { } bos) ids = [bos, .. ids];
        var output = TextGenerator.Generate(model, [ids], new GenerationOptions
        {
            MaxNewTokens = maxNewTokens,
            EosTokenIds = t.EosId is { } e ? [e] : [],
        })[0];
        return t.Decode(output[ids.Length..], skipSpecialTokens: true);
    }

    /// <summary>Longest default sample prompt, in characters: a few lines, a few dozen tokens.</summary>
    internal const int MaxDefaultPromptChars = 160;

    /// <summary>
    /// The start of the first held-out record, something in the new domain to continue: its first three lines, cut to
    /// <see cref="MaxDefaultPromptChars"/> characters (at a space when there is one), so that a record of one 100 KB
    /// line costs a short prompt, not minutes of generation.
    /// </summary>
    internal static string DefaultPrompt(string source)
    {
        if (Directory.Exists(source)) return "function ";
        foreach (var record in DataReader.Read(source).Take(1))
            if ((record.Fields?.GetValueOrDefault("text") ?? record.Fields?.GetValueOrDefault("prompt")) is string text && text.Length > 0)
            {
                var head = string.Join('\n', text.Split('\n').Take(3));
                if (head.Length <= MaxDefaultPromptChars) return head + "\n";
                var cut = head.LastIndexOf(' ', MaxDefaultPromptChars - 1);
                return head[..(cut > MaxDefaultPromptChars / 2 ? cut : MaxDefaultPromptChars)];
            }
        return "function ";
    }
}
