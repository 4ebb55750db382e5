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
    /// <summary>
    /// The layers of <paramref name="adapter"/> whose update is scaling * B @ A, for the low-rank optimizers
    /// (<c>--optim loraplus|lorafa|lorapro</c>); empty for methods of another shape.
    /// </summary>
    IEnumerable<LowRankFactors> LowRankFactors(PeftModel model, string adapter) => [];

    /// <summary>Whether <paramref name="config"/>'s initialisation needs data (<see cref="Calibrate"/>) before training.</summary>
    bool NeedsCalibration(PeftConfig config) => false;
    /// <summary>
    /// Data-aware initialisation of <paramref name="adapter"/> (EVA, CorDA, LoRA-GA), run once after it is added and
    /// before the first training step; it may change the adapter's tensors, ranks and the base weights it adapts.
    /// </summary>
    void Calibrate(PeftModel model, string adapter, CalibrationData data) { }

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
    /// True when <see cref="AfterOptimizerStep"/> freezes, adds or grows parameters (LT-SFT's phases, IncreLoRA's new
    /// ranks): the run then uses the per-parameter AdamW (the fused one needs a fixed set), which grows moments with them.
    /// </summary>
    bool ChangesParameterSet => false;
    /// <summary>What a resumed run needs beside the parameters (tensors by name; new ones, the caller disposes them).</summary>
    Dictionary<string, Tensor> CheckpointState(PeftModel model) => new();
    /// <summary>Takes up <see cref="CheckpointState"/> before the checkpoint's parameters are loaded (so grown tensors are grown first).</summary>
    void RestoreCheckpointState(PeftModel model, IReadOnlyDictionary<string, Tensor> state, string source) { }

    /// <summary>
    /// Entries of parameters whose optimizer state no longer belongs to them (a sparse method moved them to new
    /// weights), asked once after each step; the trainer zeroes their state.
    /// </summary>
    IEnumerable<(Parameter P, Tensor Entries)> StaleOptimizerEntries(PeftModel model) => [];

    /// <summary>After a checkpoint in folder <paramref name="checkpoint"/> is restored, at <paramref name="step"/>: restore what is not a parameter.</summary>
    void Resumed(PeftModel model, string checkpoint, int step) { }

    /// <summary>After each micro-batch's backward (gradients of that micro-batch added in).</summary>
    void AfterBackward(PeftModel model) { }

    /// <summary>The method's own optimizer for the run (SpIEL's per-entry AdamW), or null for the trainer's choice.</summary>
    Training.IOptimizer? Optimizer(Training.TrainingOptions options, IReadOnlyList<(string Name, Parameter P)> parameters) => null;
}
