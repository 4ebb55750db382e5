using PeftSharp.Data;
using PeftSharp.Peft;
using PeftSharp.Tuners;

namespace PeftSharp.Training;

/// <summary>
/// Data-aware initialisations (EVA, CorDA, LoRA-GA) see some data before training starts: this runs each adapter's
/// <see cref="ITuner.Calibrate"/> on it (PEFT's <c>initialize_lora_eva_weights(model, dataloader)</c>,
/// <c>preprocess_corda</c>, <c>preprocess_loraga</c>). Methods without such an init ignore it.
/// </summary>
public static class Calibration
{
    /// <summary>Whether any adapter of <paramref name="model"/> has an init that needs calibration data.</summary>
    public static bool Needed(PeftModel model) =>
        model.Configs.Any(kv => TunerRegistry.For(kv.Value).NeedsCalibration(kv.Value));

    /// <summary>
    /// Initialises every adapter of <paramref name="model"/> whose method needs data from <paramref name="batches"/>,
    /// with <paramref name="task"/>'s loss (causal_lm or seq_cls) as the forward pass.
    /// </summary>
    public static void Run(PeftModel model, IReadOnlyList<Batch> batches, string task = "causal_lm")
    {
        var loss = Objectives.ForPeft(model, task).ComputeLoss;
        foreach (var (adapter, config) in model.Configs.ToList())
        {
            var tuner = TunerRegistry.For(config);
            if (!tuner.NeedsCalibration(config)) continue;
            if (batches.Count == 0) throw new ArgumentException($"adapter '{adapter}': its init_lora_weights needs calibration batches and none were given");
            tuner.Calibrate(model, adapter, new CalibrationData(batches, loss));
        }
    }

    /// <summary>The first <see cref="TrainingOptions.InitBatches"/> training micro-batches, in the order training takes them.</summary>
    public static List<Batch> FirstBatches(BatchSource train, TrainingOptions o)
    {
        var order = train.EpochOrder(0, o.Seed, o.Shuffle);
        int n = Math.Min(o.InitBatches, train.MicroBatchesPerEpoch(o.PerDeviceTrainBatchSize));
        return Enumerable.Range(0, n).Select(i => train.MicroBatch(order, i, o.PerDeviceTrainBatchSize)).ToList();
    }
}
