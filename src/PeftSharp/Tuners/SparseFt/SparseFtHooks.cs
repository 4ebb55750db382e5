using PeftSharp.IO;
using PeftSharp.Peft;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.SparseFt;

/// <summary>
/// A sparse method's schedule as training hooks, with what every schedule needs: the optimizer state of slots that
/// moved to new entries is zeroed, and on resume the supports come back from the checkpoint's adapter file.
/// </summary>
internal sealed class SparseFtHooks(string adapter, IReadOnlyList<SparseTarget> targets, ISparseSchedule schedule) : ITrainingHooks
{
    public Tensor ExtraLoss(PeftModel model) => schedule.ExtraLoss() ?? zeros(1, device: model.Device).sum();

    public void AfterOptimizerStep(PeftModel model, int step) => schedule.AfterOptimizerStep(step);

    public bool ChangesParameterSet => schedule.ChangesParameterSet;

    public void AfterBackward(PeftModel model) => schedule.AfterBackward();

    public Training.IOptimizer? Optimizer(Training.TrainingOptions options, IReadOnlyList<(string Name, Parameter P)> parameters) =>
        schedule.Optimizer(options, parameters);

    public Dictionary<string, Tensor> CheckpointState(PeftModel model) => schedule.CheckpointState();

    public void RestoreCheckpointState(PeftModel model, IReadOnlyDictionary<string, Tensor> state, string source) =>
        schedule.RestoreCheckpointState(state, source);

    List<(Parameter, Tensor)> stale = new();

    public IEnumerable<(Parameter P, Tensor Entries)> StaleOptimizerEntries(PeftModel model)
    {
        foreach (var (_, slots) in stale) slots.Dispose();   // handed out last step, used by now
        stale = new List<(Parameter, Tensor)>();
        foreach (var t in targets)
        {
            var d = t.Delta;
            foreach (var slots in d.ChangedSlots) stale.Add((d.Values, slots));
            d.ChangedSlots.Clear();
        }
        return stale;
    }

    /// <summary>The supports are not parameters: they come from the adapter the checkpoint saved beside its parameters.</summary>
    public void Resumed(PeftModel model, string checkpoint, int step)
    {
        var file = Path.Combine(adapter == "default" ? checkpoint : Path.Combine(checkpoint, adapter), PeftModel.WeightsFile);
        using var saved = SafetensorsFile.Open(file);
        using (no_grad())
            foreach (var t in targets)
            {
                var key = $"base_model.model.{t.Path}.sparse_ft_indices";
                if (!saved.Contains(key)) throw new InvalidDataException($"{file}: no tensor '{key}' to resume the sparse support from");
                using var indices = saved.Load(key);
                if (!indices.shape.SequenceEqual(t.Delta.Indices.shape))
                    throw new InvalidDataException($"{file}: '{key}' has shape {AdapterTensors.Shape(indices)}, the adapter {AdapterTensors.Shape(t.Delta.Indices)}");
                t.Delta.Indices.copy_(indices);
            }
        schedule.Resumed(step);
    }
}
