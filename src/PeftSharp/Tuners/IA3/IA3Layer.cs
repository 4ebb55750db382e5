using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace PeftSharp.Tuners.IA3;

/// <summary>
/// Wraps a Linear or GPT-2 Conv1D (<c>base_layer</c>) with one learned vector per adapter (<c>ia3_l</c>):
/// [out, 1] scaling the output, or [1, in] scaling the input of feed-forward layers. Active adapters multiply.
/// </summary>
public sealed class IA3Layer : Module<Tensor, Tensor>, ITunerLayer
{
    readonly long inFeatures, outFeatures;
    readonly MergeLedger ledger = new();

    Module<Tensor, Tensor> base_layer;
    ParameterDict ia3_l = new();

    public IA3Layer(Module<Tensor, Tensor> baseLayer, bool isFeedforward) : base("IA3Layer")
    {
        (inFeatures, outFeatures) = BaseLayers.LinearFeatures(baseLayer, "(IA)^3", conv1D: true);
        base_layer = baseLayer;
        IsFeedforward = isFeedforward;
        RegisterComponents();
        train(baseLayer.training); // a new wrapper would otherwise be in training mode inside an eval model
    }

    public bool IsFeedforward { get; }
    public Module BaseLayer => base_layer;
    public IReadOnlyCollection<string> AdapterNames => ia3_l.Keys.ToList();
    public IReadOnlyList<string> ActiveAdapters { get; set; } = [];
    public bool Disabled { get; set; }
    public bool CanMerge => true;
    public IReadOnlyList<string> MergedAdapters => ledger.Adapters;

    public void AddAdapter(string name, bool initOnes)
    {
        if (ia3_l.ContainsKey(name)) throw new ArgumentException($"adapter '{name}' already exists on this layer");
        var device = BaseLayers.Weight(base_layer).device;
        long[] shape = IsFeedforward ? [1, inFeatures] : [outFeatures, 1];
        using var _ = no_grad();
        var l = initOnes ? ones(shape, dtype: ScalarType.Float32, device: device) : randn(shape, dtype: ScalarType.Float32, device: device);
        ia3_l.Add(name, new Parameter(l));
    }

    // The product of the active adapters' vectors, flattened: [in] or [out].
    Tensor? Scaling()
    {
        Tensor? s = null;
        foreach (var a in ActiveAdapters)
            if (ia3_l.TryGetValue(a, out var l)) s = s is null ? l.flatten() : s * l.flatten();
        return s;
    }

    public override Tensor forward(Tensor x)
    {
        if (Disabled && ledger.Any) UnmergeInPlace();
        if (Disabled || ledger.Any) return base_layer.call(x);
        using var scope = NewDisposeScope();
        if (Scaling() is not { } s) return base_layer.call(x).MoveToOuterDisposeScope();
        var result = IsFeedforward
            ? base_layer.call((x.to(s.dtype) * s).to(x.dtype))
            : (base_layer.call(x).to(s.dtype) * s).to(x.dtype);
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>W' = W diag(l) (feed-forward) or diag(l) W and b' = l ⊙ b (output scaling).</summary>
    public void MergeInPlace(IReadOnlyList<string> adapters, bool safe)
    {
        foreach (var a in adapters)
        {
            if (!ia3_l.ContainsKey(a) || ledger.Contains(a)) continue;
            using var scope = NewDisposeScope();
            var l = ia3_l[a].detach();
            var w = BaseLayers.WeightOutIn(base_layer).to(ScalarType.Float32);
            var merged = BaseLayers.ToStorage(base_layer, w * l); // [out,in] * [1,in] or [out,1]
            var bias = BaseLayers.Bias(base_layer);
            Tensor? mergedBias = !IsFeedforward && bias is not null ? bias.to(ScalarType.Float32) * l.flatten() : null;
            ledger.ApplyInPlace(base_layer, a, merged, mergedBias, safe);
        }
    }

    public void UnmergeInPlace() => ledger.UndoAllInPlace(base_layer);

    public void DeleteAdapter(string adapter)
    {
        if (ledger.Contains(adapter)) throw new InvalidOperationException($"adapter '{adapter}' is merged; unmerge it before deleting");
        ia3_l.Remove(adapter);
        ActiveAdapters = ActiveAdapters.Where(a => a != adapter).ToList();
    }

    public IEnumerable<(string Key, Tensor Value)> StateDict(string adapter)
    {
        yield return ("ia3_l", ia3_l[adapter]);
    }

    public void LoadStateDict(string adapter, IReadOnlyDictionary<string, Tensor> tensors, string modulePath, string source) =>
        AdapterTensors.CopyInto(StateDict(adapter), tensors, modulePath, adapter, source,
            $"in={inFeatures}, out={outFeatures}, {(IsFeedforward ? "feed-forward: scales the input" : "scales the output")}");

    public IEnumerable<Parameter> AdapterParameters(string adapter) => [ia3_l[adapter]];
}
