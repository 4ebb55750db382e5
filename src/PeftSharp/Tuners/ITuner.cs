using PeftSharp.Peft;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Tuners;

/// <summary>
/// A tuning method: its config type, how it attaches an adapter to a model, and everything else about it that
/// training and saving need (its <c>--method</c> presets, training hooks, extra saved tensors, save-time conversion).
/// <c>Peft/</c> and <c>Training/</c> reach a method only through this interface, found in <see cref="TunerRegistry"/>.
/// </summary>
public interface ITuner
{
    /// <summary>PEFT's <c>peft_type</c> (e.g. "LORA"), or our own for methods PEFT lacks.</summary>
    string PeftType { get; }
    Type ConfigType { get; }
    /// <summary>Keys PEFT writes that this method accepts without modelling them: they do not change what it computes.</summary>
    IReadOnlySet<string> KnownUnusedKeys { get; }
    /// <summary>
    /// Keys that change what the adapter computes and that PeftSharp does not implement: a config that sets one to
    /// anything but null, false or empty is refused, naming the key (ignoring it would give other numbers than PEFT).
    /// </summary>
    IReadOnlySet<string> UnsupportedKeys => NoKeys;
    /// <summary>Adds adapter <paramref name="name"/> to <paramref name="model"/>.</summary>
    void Inject(PeftModel model, string name, PeftConfig config);
    /// <summary>The config to inject with when saved weights will be loaded over it (skip inits that change the base).</summary>
    PeftConfig ForLoading(PeftConfig config) => config;

    /// <summary>The <c>--method</c> names this method answers to, each with the config it builds from a run's settings.</summary>
    IReadOnlyList<MethodPreset> Presets => [];
    /// <summary>What the method adds to a training run of <paramref name="adapter"/> (AdaLoRA's rank allocation), or null.</summary>
    ITrainingHooks? TrainingHooks(PeftModel model, string adapter) => null;
    /// <summary>Base-model parameters the adapter trains and saves under their own names (LoRA's <c>bias</c> option).</summary>
    IEnumerable<(string Name, Parameter P)> TrainedBaseParameters(PeftModel model, PeftConfig config) => [];
    /// <summary>
    /// The config to write for <paramref name="adapter"/>; may rewrite <paramref name="tensors"/> (saved names) too.
    /// With <paramref name="convertToLora"/>, inits that changed the base (PiSSA, OLoRA) are saved as plain deltas
    /// against the original base weights (PEFT's <c>path_initial_model_for_weight_conversion</c>).
    /// </summary>
    PeftConfig BeforeSave(PeftModel model, string adapter, PeftConfig config, Dictionary<string, Tensor> tensors, bool convertToLora) => config;

    static readonly IReadOnlySet<string> NoKeys = new HashSet<string>();
}

/// <summary>What a method adds to training: a loss term and work after each optimizer step.</summary>
public interface ITrainingHooks
{
    /// <summary>Added to the training loss (never to the held-out loss).</summary>
    Tensor ExtraLoss(PeftModel model);
    /// <param name="step">the optimizer step just taken, from 1.</param>
    void AfterOptimizerStep(PeftModel model, int step);

    /// <summary>
    /// Entries of parameters whose optimizer state no longer belongs to them (a sparse method moved them to new
    /// weights), asked once after each step; the trainer zeroes their state.
    /// </summary>
    IEnumerable<(Parameter P, Tensor Entries)> StaleOptimizerEntries(PeftModel model) => [];

    /// <summary>After a checkpoint in folder <paramref name="checkpoint"/> is restored, at <paramref name="step"/>: restore what is not a parameter.</summary>
    void Resumed(PeftModel model, string checkpoint, int step) { }

    /// <summary>True when <see cref="AfterOptimizerStep"/> freezes parameters (the fused optimizer needs a fixed set).</summary>
    bool ChangesParameterSet => false;
}
