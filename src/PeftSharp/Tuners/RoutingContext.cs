using static TorchSharp.torch;

namespace PeftSharp.Tuners;

/// <summary>
/// What routed methods share across a model's layers during one forward: the batch's task ids (Poly reads them, as
/// PEFT's forward hands <c>task_ids</c> to every Poly layer) and an observer that sees each routing decision (for
/// <c>analyze --routing</c>). One per <see cref="Peft.PeftModel"/>; tuners give it to the layers they create.
/// </summary>
public sealed class RoutingContext
{
    /// <summary>[B] int64 task of each row of the running batch, or null when the caller gave none.</summary>
    public Tensor? TaskIds { get; private set; }

    /// <summary>
    /// Called with (layer, adapter, weights) for every routing a layer computes: weights [N, E], one row per token
    /// (or per batch row, for task routing), the weight each expert got (0 for those not picked). Copy what you keep.
    /// </summary>
    public Action<ITunerLayer, string, Tensor>? Observer { get; set; }

    /// <summary>Until disposed, <see cref="TaskIds"/> is <paramref name="taskIds"/>; null keeps what an outer scope set.</summary>
    public IDisposable Use(Tensor? taskIds)
    {
        if (taskIds is null) return Kept.Instance;
        var outer = TaskIds;
        TaskIds = taskIds;
        return new Undo(() => TaskIds = outer);
    }

    public void Report(ITunerLayer layer, string adapter, Tensor weights) => Observer?.Invoke(layer, adapter, weights);

    sealed class Undo(Action undo) : IDisposable
    {
        public void Dispose() => undo();
    }

    sealed class Kept : IDisposable
    {
        public static readonly Kept Instance = new();
        public void Dispose() { }
    }
}
