using System.Text.Json;
using PeftSharp.Data;
using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Native;
using PeftSharp.Training;

namespace PeftSharp.Merging;

/// <summary>What an aTLAS merge learned and wrote.</summary>
/// <param name="HeldOut">the held-out loss of the base model and of the composed one (in the model's float32), when asked.</param>
public sealed record AtlasRunResult(AtlasResult Learned, IReadOnlyList<string> TaskModels, AtlasOptions Options, MergeResult Merge,
    (double Before, double After)? HeldOut);

public static partial class Atlas
{
    /// <summary>Written beside the composed model: the task models, the options, the coefficients per tensor and the loss per step.</summary>
    public const string CoefficientsFile = "atlas_coefficients.json";

    /// <summary>
    /// aTLAS as a merge (<c>merge_method: atlas</c>): the base model and the task models (full models, or LoRA adapters
    /// as <c>merge-models</c> reads them) come from <paramref name="config"/>; the coefficients are learned on
    /// <paramref name="data"/>; the composed model is written as merge-models writes any merge (config, tokenizer,
    /// safetensors in a staged folder moved in when complete) with <see cref="CoefficientsFile"/> beside it.
    /// Memory holds the model being trained and its gradients; base weights and task vectors are read from the inputs
    /// one tensor at a time, each step. With <c>adapter_output</c> the composed change is written as a LoRA adapter instead
    /// (each targeted weight's <c>sum_t lambda_{t,b} tau_{t,b}</c>, truncated by SVD to rank r).
    /// </summary>
    /// <param name="o">the options; null: those of the config's <c>parameters:</c> (<see cref="OptionsOf"/>).</param>
    /// <param name="progress">told of each step's training loss (step numbers from 1).</param>
    /// <param name="heldOut">a held-out loss (<see cref="HeldOutLoss.Of(ILanguageModel)"/>) taken before and after learning.</param>
    public static AtlasRunResult Run(MergeConfig config, BatchSource data, string outputFolder, AtlasOptions? o = null,
        MergeOptions? options = null, Action<int, double>? progress = null, Func<ILanguageModel, double>? heldOut = null)
    {
        options ??= new MergeOptions();
        var method = Check(config);
        o = Checked(o ?? OptionsOf(config));

        AtlasResult learned;
        List<MergeInput> tasks;
        (double, double)? heldOutLoss = null;
        var warnings = new List<string>();
        using (var inputs = MergeInputs.Open(config))
        {
            MergeValidation.Check(config, method, inputs, options, warnings);
            var baseSource = inputs.Base!;
            if (baseSource.Adapter is not null || baseSource.Folder is null || !File.Exists(Path.Combine(baseSource.Folder, "config.json")))
                throw new MergeException($"base_model '{config.BaseModel}': atlas trains through the base model, so it must be a model folder with config.json");
            tasks = inputs.NonBase.ToList();
            Malloc.MapLargeBlocks(1 << 20);   // per-tensor temporaries go back to the kernel when freed (see Malloc)
            using var model = AutoModel.Load(baseSource.Folder);
            using var terms = new StreamedTerms(model, baseSource, tasks);
            if (terms.Blocks.Count == 0)
                throw new MergeException($"no task model changes a parameter of base_model '{config.BaseModel}': nothing to learn");
            double before = heldOut?.Invoke(model) ?? double.NaN;
            learned = Learn(model, terms, data, o, b => Objectives.CausalLM(model, b), (step, loss) =>
            {
                Malloc.Trim();   // as the streamed merge: freed per-tensor temporaries must not pile up in the heap
                progress?.Invoke(step, loss);
            });
            if (heldOut is not null) heldOutLoss = (before, heldOut(model));
        }

        var names = tasks.Select(m => m.Entry.Model).ToList();
        var merge = ModelMerger.Run(Composition(config, tasks, learned), outputFolder, options with
        {
            BeforePublish = stage => WriteCoefficients(stage, config.BaseModel!, names, o, learned),
        });
        return new AtlasRunResult(learned, names, o, merge with { Warnings = warnings.Concat(merge.Warnings).Distinct().ToList() },
            heldOutLoss);
    }

    /// <summary>What can be refused in the config alone, before any data or model is read; Run checks it too.</summary>
    public static MergeMethod Check(MergeConfig config)
    {
        var method = MergeMethods.Get(config.MergeMethod);
        if (method.Kind != MergeKind.Atlas) throw new MergeException($"Atlas.Run learns merge_method 'atlas', not '{config.MergeMethod}'");
        if (config.Slices is not null) throw new MergeException("merge_method 'atlas' composes whole models: list them under models:, not slices:");
        if (config.BaseModel is null) throw new MergeException("merge_method 'atlas' needs base_model: the model the task vectors are taken against and trained through");
        if (config.Lines is not null) throw new MergeException("lines (LiNeS) does not apply to atlas, which learns each tensor's scale itself: remove lines");
        new MergeParameters(config, method).Check();
        OptionsOf(config);
        return method;
    }

    /// <summary>
    /// The options a config's <c>parameters:</c> sets (steps, learning_rate, batch_size, init_lambda, seed), each a single
    /// number; what it leaves out keeps <see cref="AtlasOptions"/>' default.
    /// </summary>
    public static AtlasOptions OptionsOf(MergeConfig config)
    {
        var d = new AtlasOptions();
        double? Get(string name)
        {
            if (!config.Parameters.TryGetValue(name, out var s)) return null;
            if (s.Evaluate("", 0) is double v && Equals(s.Evaluate("", 1), v)) return v;
            throw new MergeException($"parameters.{name}: atlas reads one number for the whole merge, got '{s}'");
        }
        return Checked(new AtlasOptions(
            Whole("steps", Get("steps") ?? d.Steps),
            Get("learning_rate") ?? d.LearningRate,
            Whole("batch_size", Get("batch_size") ?? d.BatchSize),
            Get("init_lambda") ?? d.Initial,
            Get("seed") is double seed ? (seed == Math.Floor(seed) && Math.Abs(seed) < 1e15 ? (long)seed
                : throw new MergeException($"parameters.seed: must be a whole number, got {seed}")) : d.Seed));
    }

    static int Whole(string name, double v) =>
        v == Math.Floor(v) && v >= 1 && v <= int.MaxValue ? (int)v
            : throw new MergeException($"parameters.{name}: must be a whole number of at least 1, got {v}");

    static AtlasOptions Checked(AtlasOptions o)
    {
        if (o.Steps < 1) throw new MergeException($"parameters.steps: must be a whole number of at least 1, got {o.Steps}");
        if (o.BatchSize < 1) throw new MergeException($"parameters.batch_size: must be a whole number of at least 1, got {o.BatchSize}");
        if (!(o.LearningRate > 0) || double.IsInfinity(o.LearningRate))
            throw new MergeException($"parameters.learning_rate: must be a positive number, got {o.LearningRate}");
        if (!double.IsFinite(o.Initial)) throw new MergeException($"parameters.init_lambda: must be a finite number, got {o.Initial}");
        return o;
    }

    /// <summary>
    /// The learned model as a merge that the streamed merger writes: task arithmetic whose per-model weight is the
    /// learned coefficient of each tensor, <c>base + sum_t lambda_{t,b} tau_{t,b}</c>; tensors that were not learned
    /// (no task vector changes them, or the model does not train them) keep the base's (weight 0).
    /// </summary>
    static MergeConfig Composition(MergeConfig config, List<MergeInput> tasks, AtlasResult learned) => config with
    {
        MergeMethod = "task_arithmetic",
        Models = tasks.Select((m, t) => m.Entry with
        {
            Parameters = new Dictionary<string, ParameterSetting>
            {
                ["weight"] = ParameterSetting.PerTensor(learned.Coefficients.ToDictionary(kv => kv.Key, kv => kv.Value[t])),
            },
        }).ToList(),
        Parameters = new Dictionary<string, ParameterSetting>
        {
            ["weight"] = ParameterSetting.Of(0.0), ["normalize"] = ParameterSetting.Of(false), ["lambda"] = ParameterSetting.Of(1.0),
        },
    };

    static void WriteCoefficients(string stage, string baseModel, List<string> taskModels, AtlasOptions o, AtlasResult learned)
    {
        var json = JsonSerializer.Serialize(new
        {
            base_model = baseModel,
            task_models = taskModels,
            options = new { steps = o.Steps, learning_rate = o.LearningRate, batch_size = o.BatchSize, init_lambda = o.Initial, seed = o.Seed },
            coefficients = learned.Coefficients,
            losses = learned.Losses,
        }, new JsonSerializerOptions { WriteIndented = true });
        AtomicFile.WriteAllText(Path.Combine(stage, CoefficientsFile), json);
    }

    /// <summary>Learns from <paramref name="taskModels"/> against <paramref name="baseModel"/> (model folders) and writes the composed model and atlas_coefficients.json.</summary>
    public static AtlasResult Run(string baseModel, IReadOnlyList<string> taskModels, BatchSource data, AtlasOptions o, string outputFolder) =>
        Run(new MergeConfig { MergeMethod = "atlas", BaseModel = baseModel, Models = taskModels.Select(m => new MergeModel(m)).ToList() },
            data, outputFolder, o).Learned;
}
