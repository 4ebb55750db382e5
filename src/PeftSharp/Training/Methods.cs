using System.Text.Json.Nodes;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tuners;

namespace PeftSharp.Training;

/// <summary>
/// <c>--method NAME</c> and <c>--adapter-config FILE</c>: the adapter config a training run builds, and what the
/// method adds to training. Each method's folder holds its presets and hooks (<see cref="ITuner"/>); this class
/// only looks them up in <see cref="TunerRegistry"/>.
/// </summary>
public static class Methods
{
    /// <summary>Every <c>--method</c> name, in registration order.</summary>
    public static string[] Names => TunerRegistry.Presets.Select(p => p.Name).ToArray();

    /// <param name="totalSteps">the run's optimizer steps (AdaLoRA schedules its rank budget over them).</param>
    public static PeftConfig ConfigFor(TrainingOptions o, ModelConfig model, int totalSteps)
    {
        var settings = new PresetSettings(o.LoraR, o.LoraAlpha, o.LoraDropout, o.LoraTargetModules, o.UseRslora, o.UseDora,
            o.Task == "seq_cls" ? "SEQ_CLS" : "CAUSAL_LM", o.Model, model, totalSteps)
        { Density = o.Density, ReselectionSteps = o.SparseReselectionSteps, Seed = o.Seed };
        if (o.AdapterConfig is { } path) return FromFile(path, o, settings);
        var preset = TunerRegistry.Preset(o.Method)
            ?? throw new ArgumentException($"option method '{o.Method}' is not one of: {string.Join(", ", Names)}");
        return preset.Build(settings);
    }

    static readonly TrainingOptions Defaults = new();

    // The --lora-* flags and the PEFT keys they set; a method's config has those of them that apply to it.
    static readonly (string Key, Func<TrainingOptions, JsonNode?> Value, Func<TrainingOptions, bool> Given)[] Overrides =
    [
        ("r", o => o.LoraR, o => o.Given.Contains("lora_r") || o.LoraR != Defaults.LoraR),
        ("lora_alpha", o => o.LoraAlpha, o => o.Given.Contains("lora_alpha") || o.LoraAlpha != Defaults.LoraAlpha),
        ("alpha", o => o.LoraAlpha, o => o.Given.Contains("lora_alpha") || o.LoraAlpha != Defaults.LoraAlpha),
        ("lora_dropout", o => o.LoraDropout, o => o.Given.Contains("lora_dropout") || o.LoraDropout != Defaults.LoraDropout),
        ("target_modules", o => o.LoraTargetModules is ["all-linear"] ? "all-linear" : new JsonArray([.. o.LoraTargetModules.Select(m => JsonValue.Create(m))]),
            o => o.Given.Contains("lora_target_modules") || !o.LoraTargetModules.SequenceEqual(Defaults.LoraTargetModules)),
        ("use_rslora", o => o.UseRslora, o => o.Given.Contains("use_rslora") || o.UseRslora),
        ("use_dora", o => o.UseDora, o => o.Given.Contains("use_dora") || o.UseDora),
    ];

    /// <summary>
    /// A PEFT <c>adapter_config.json</c> (or ours) as the recipe for a new adapter: every method setting under PEFT's
    /// own name. Flags that were given (typed, or set in the options file) or that differ from their defaults override the
    /// keys they name, where the method has them.
    /// </summary>
    static PeftConfig FromFile(string path, TrainingOptions o, PresetSettings s)
    {
        var config = PeftConfigJson.Load(path);
        var json = JsonNode.Parse(PeftConfigJson.Serialize(config))!.AsObject();
        foreach (var (key, value, given) in Overrides)
            if (given(o) && json.ContainsKey(key)) json[key] = value(o);
        json["inference_mode"] = false;
        json["task_type"] ??= s.TaskType;
        json["base_model_name_or_path"] ??= s.BaseModel;
        return PeftConfigJson.Parse(json.ToJsonString(), path);
    }

    /// <summary>The trainer's view of the model, with what the active adapters' methods add to training.</summary>
    public static TrainableModel Trainable(PeftModel model, string task)
    {
        // Hooks first: a method may add the parameters it trains when training starts (LT-SFT's dense phase).
        var hooks = model.ActiveAdapters.Select(a => TunerRegistry.For(model.Configs[a]).TrainingHooks(model, a)).OfType<ITrainingHooks>().ToList();
        var plain = Objectives.ForPeft(model, task) with
        {
            LowRankFactors = model.ActiveAdapters.SelectMany(a => TunerRegistry.For(model.Configs[a]).LowRankFactors(model, a)).ToList(),
            NoDecay = NoDecay(model),
        };
        if (hooks.Count == 0) return plain;
        return plain with
        {
            FixedParameterSet = plain.FixedParameterSet && !hooks.Any(h => h.ChangesParameterSet),
            StaleOptimizerEntries = () => hooks.SelectMany(h => h.StaleOptimizerEntries(model)).ToList(),
            RestoredFrom = (checkpoint, step) => { foreach (var h in hooks) h.Resumed(model, checkpoint, step); },
            NewOptimizer = o => hooks.Select(h => h.Optimizer(o, plain.Parameters)).FirstOrDefault(x => x is not null),
            AfterBackward = () => { foreach (var h in hooks) h.AfterBackward(model); },
            // Extra terms shape training only: held-out loss stays the plain loss.
            ComputeLoss = b => model.Base.training ? hooks.Aggregate(plain.ComputeLoss(b), (loss, h) => loss + h.ExtraLoss(model)) : plain.ComputeLoss(b),
            AfterOptimizerStep = step =>
            {
                plain.AfterOptimizerStep?.Invoke(step);
                foreach (var h in hooks) h.AfterOptimizerStep(model, step);
            },
            SaveState = () => hooks.SelectMany(h => h.CheckpointState(model)).ToDictionary(kv => kv.Key, kv => kv.Value),
            LoadState = (state, source) => { foreach (var h in hooks) h.RestoreCheckpointState(model, state, source); },
        };
    }

    /// <summary>
    /// transformers' weight-decay exemptions (<c>get_parameter_names(model, ALL_LAYERNORM_LAYERS)</c> less names with
    /// "bias"), as PEFT's LoRA+ groups them: biases, and the parameters of LayerNorm modules (RMSNorm is not among them).
    /// </summary>
    static HashSet<string> NoDecay(PeftModel model)
    {
        var names = new HashSet<string>();
        foreach (var (path, module) in model.Base.named_modules())
        {
            var prefix = path.Length == 0 ? "" : path + ".";
            foreach (var (name, _) in module.named_parameters(recurse: false))
                if (module is TorchSharp.Modules.LayerNorm || (prefix + name).Contains("bias", StringComparison.Ordinal)) names.Add(prefix + name);
        }
        return names;
    }
}
