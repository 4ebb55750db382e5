using PeftSharp.Models;

namespace PeftSharp.Training.Layerwise;

/// <summary>
/// <c>--method lisa|hft</c>: full-parameter methods that train the base weights directly, a changing subset at a time.
/// No adapter: the run writes the whole model (<see cref="ModelSaving.SavePretrained"/>) where an adapter would go.
/// </summary>
public static class LayerwiseMethods
{
    public static readonly string[] Names = ["lisa", "hft"];

    public static bool Handles(string method) => Names.Contains(method.ToLowerInvariant());

    /// <summary>
    /// The trainer's view of <paramref name="model"/> under LISA or HFT: all base parameters (frozen ones get no gradient,
    /// so the optimizer skips them and drops their state), re-sampled after every <c>lisa_interval</c>-th step, and
    /// saved as a full checkpoint with the tokenizer files of <paramref name="sourceFolder"/>.
    /// </summary>
    public static (TrainableModel Model, string Summary) Trainable(PretrainedModel model, TrainingOptions o, string? sourceFolder)
    {
        Func<string> describe;
        Action<int> apply;
        IReadOnlyList<(string Name, TorchSharp.Modules.Parameter P)> parameters;
        switch (o.Method.ToLowerInvariant())
        {
            case "lisa":
                var lisa = new LisaSchedule(model, o.LisaActiveLayers, o.LisaInterval, o.Seed);
                (describe, apply, parameters) = (lisa.ToString, lisa.Apply, lisa.Parameters);
                break;
            case "hft":
                var hft = new HftSchedule(model, o.LisaInterval, o.Seed);
                (describe, apply, parameters) = (hft.ToString, hft.Apply, hft.Parameters);
                break;
            default:
                throw new ArgumentException($"option method '{o.Method}' is not a layer-wise method ({string.Join(", ", Names)})");
        }
        var trainable = new TrainableModel(parameters,
            o.Task == "seq_cls" ? b => Objectives.Classification(model, b) : b => Objectives.CausalLM(model, b),
            dir => ModelSaving.SavePretrained(model, sourceFolder, dir, model.DType))
        {
            SetTrainingMode = training => model.train(training),
            AfterOptimizerStep = apply,
            Resumed = apply,
            FixedParameterSet = false,
        };
        return (trainable, describe());
    }
}
