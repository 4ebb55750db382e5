using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Module = TorchSharp.torch.nn.Module;

namespace PeftSharp.Tuners;

/// <summary>The per-layer bookkeeping <see cref="ITunerLayer"/> reads, without the layer's own settings type.</summary>
public interface IAdapterBook
{
    IReadOnlyCollection<string> Names { get; }
    IReadOnlyList<string> Active { get; set; }
    bool Disabled { get; set; }
    IReadOnlyList<string> Merged { get; }
    /// <summary>Forgets the adapter; refused while it is merged.</summary>
    void Remove(string adapter);
    /// <summary>Merges additive deltas (given in the base weight's storage layout) for the adapters not merged yet.</summary>
    void MergeDeltas(IEnumerable<string> adapters, Func<string, Tensor> delta, bool safe);
    void Unmerge();
    /// <summary>Per-row adapters for mixed batches (null: every row uses the active set); set by PeftModel.RowAdapters.</summary>
    RowGroups? RowAdapters { get; set; }
}

/// <summary>Settings of a layer whose adapters have none beyond their tensors.</summary>
public readonly record struct NoSettings;

/// <summary>
/// What every tuner layer keeps about its adapters, written once and composed into each layer: the adapters and
/// their settings, the active set, the disabled flag, the merge record, the duplicate-name and
/// unmerge-before-delete checks, and the train/eval rule.
/// </summary>
/// <typeparam name="TSettings">what the layer keeps per adapter (scaling, dropout, ...)</typeparam>
public sealed class AdapterBook<TSettings> : IAdapterBook
{
    readonly Module baseLayer;
    readonly Dictionary<string, TSettings> settings = new();
    readonly MergeRecord merges = new();
    IReadOnlyList<string> active = [];

    public AdapterBook(Module baseLayer) => this.baseLayer = baseLayer;

    public IReadOnlyCollection<string> Names => settings.Keys;
    /// <summary>Adapters whose output is added, in order (names this layer does not hold are skipped).</summary>
    public IReadOnlyList<string> Active { get => active; set => active = value.ToList(); }
    public bool Disabled { get; set; }
    public RowGroups? RowAdapters { get; set; }
    public IReadOnlyList<string> Merged => merges.Adapters;
    public bool IsMerged => merges.Any;

    /// <summary>
    /// The train/eval rule: dropout and other training-only randomness follow the base layer, which is part of the
    /// model and so follows <c>model.train()</c>/<c>eval()</c>. The wrapper's own flag is not used: a module created
    /// after <c>eval()</c> starts in training mode, and adapters were random at inference because of it.
    /// </summary>
    public bool Training => baseLayer.training;

    public TSettings this[string adapter] =>
        settings.TryGetValue(adapter, out var s) ? s : throw new KeyNotFoundException($"no adapter '{adapter}' in this layer");

    public bool Contains(string adapter) => settings.ContainsKey(adapter);

    /// <summary>Refuses a second adapter of the same name; call before building the adapter's tensors.</summary>
    public void CheckNew(string adapter)
    {
        if (settings.ContainsKey(adapter)) throw new ArgumentException($"adapter '{adapter}' already exists on this layer");
    }

    public void Add(string adapter, TSettings s)
    {
        CheckNew(adapter);
        settings[adapter] = s;
    }

    public void Remove(string adapter)
    {
        if (merges.Contains(adapter)) throw new InvalidOperationException($"adapter '{adapter}' is merged; unmerge it before deleting");
        settings.Remove(adapter);
        active = active.Where(a => a != adapter).ToList();
    }

    /// <summary>The active adapters this layer holds, with their settings.</summary>
    public IEnumerable<(string Name, TSettings Settings)> ActiveAdapters =>
        active.Where(settings.ContainsKey).Select(a => (a, settings[a]));

    /// <summary>
    /// True when the forward is the base layer alone: adapters disabled (a merged layer is unmerged first, as in
    /// PEFT), merged into the weights already, or none active here.
    /// </summary>
    public bool RunsBaseOnly
    {
        get
        {
            if (Disabled && merges.Any) Unmerge();
            return Disabled || merges.Any || !active.Any(settings.ContainsKey);
        }
    }

    /// <summary>Those of <paramref name="adapters"/> this layer holds and has not merged yet, in order.</summary>
    public IEnumerable<string> ToMerge(IEnumerable<string> adapters) => adapters.Where(a => settings.ContainsKey(a) && !merges.Contains(a));

    /// <summary>Merges additive deltas: W becomes W + delta(adapter) (in the weight's storage layout) for each adapter in turn.</summary>
    public void MergeDeltas(IEnumerable<string> adapters, Func<string, Tensor> delta, bool safe)
    {
        foreach (var a in ToMerge(adapters).ToList())
        {
            using var scope = NewDisposeScope();
            using var _ = no_grad();
            var weight = BaseLayers.Weight(baseLayer);
            Write(a, [(weight, weight.to(ScalarType.Float32) + delta(a).to(ScalarType.Float32))], safe);
        }
    }

    /// <summary>Writes an adapter's merged values into base parameters, in place, keeping what is needed to unmerge.</summary>
    public void Write(string adapter, IReadOnlyList<(Parameter Target, Tensor Value)> values, bool safe) => merges.Write(adapter, values, safe);

    /// <summary>A base parameter's value before any merge.</summary>
    public Tensor Original(Parameter p) => merges.Original(p);

    public void Unmerge() => merges.RestoreAll();
}
