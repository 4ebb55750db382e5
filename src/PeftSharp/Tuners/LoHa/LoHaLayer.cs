using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace PeftSharp.Tuners.LoHa;

/// <summary>
/// Wraps a Linear (<c>base_layer</c>): h = W x + dW x with dW = (alpha/r) (W1a W1b) ⊙ (W2a W2b),
/// W1a, W2a [out, r] and W1b, W2b [r, in] (PEFT's <c>hada_w1_a</c>, <c>hada_w1_b</c>, <c>hada_w2_a</c>, <c>hada_w2_b</c>).
/// </summary>
public sealed class LoHaLayer : Module<Tensor, Tensor>, IDeltaWeightLayer
{
    sealed record Settings(int R, double Alpha, double RankDropout, double ModuleDropout)
    {
        public double Scaling => Alpha / R;
    }

    readonly long inFeatures, outFeatures;
    readonly Dictionary<string, Settings> settings = new();
    readonly MergeLedger ledger = new();

    Module<Tensor, Tensor> base_layer;
    ParameterDict hada_w1_a = new(), hada_w1_b = new(), hada_w2_a = new(), hada_w2_b = new();

    public LoHaLayer(Module<Tensor, Tensor> baseLayer) : base("LoHaLayer")
    {
        (inFeatures, outFeatures) = BaseLayers.LinearFeatures(baseLayer, "LoHa");
        base_layer = baseLayer;
        RegisterComponents();
        train(baseLayer.training); // a new wrapper would otherwise be in training mode inside an eval model
    }

    public Module BaseLayer => base_layer;
    public IReadOnlyCollection<string> AdapterNames => settings.Keys;
    public IReadOnlyList<string> ActiveAdapters { get; set; } = [];
    public bool Disabled { get; set; }
    public bool CanMerge => true;
    public IReadOnlyList<string> MergedAdapters => ledger.Adapters;
    public double Scaling(string adapter) => settings[adapter].Scaling;

    public void AddAdapter(string name, int r, double alpha, LoHaConfig c)
    {
        if (settings.ContainsKey(name)) throw new ArgumentException($"adapter '{name}' already exists on this layer");
        if (r <= 0) throw new ArgumentException($"LoHa rank must be positive, got {r}");
        var device = BaseLayers.Weight(base_layer).device;
        using var _ = no_grad();
        Parameter New(long rows, long cols)
        {
            var p = new Parameter(empty(rows, cols, dtype: ScalarType.Float32, device: device));
            nn.init.kaiming_uniform_(p, Math.Sqrt(5));
            return p;
        }
        hada_w1_a.Add(name, New(outFeatures, r));
        hada_w1_b.Add(name, New(r, inFeatures));
        hada_w2_a.Add(name, New(outFeatures, r));
        hada_w2_b.Add(name, New(r, inFeatures));
        if (c.InitWeights) hada_w2_b[name].zero_(); // dW = 0 at the start
        settings[name] = new Settings(r, alpha, c.RankDropout, c.ModuleDropout);
    }

    Tensor DeltaOutIn(string a)
    {
        using var scope = NewDisposeScope();
        var delta = matmul(hada_w1_a[a], hada_w1_b[a]) * matmul(hada_w2_a[a], hada_w2_b[a]) * settings[a].Scaling;
        return delta.MoveToOuterDisposeScope();
    }

    /// <summary>(alpha/r) (W1a W1b) ⊙ (W2a W2b), [out, in].</summary>
    public Tensor DeltaWeight(string adapter) => DeltaOutIn(adapter);

    public override Tensor forward(Tensor x)
    {
        if (Disabled && ledger.Any) UnmergeInPlace();
        if (Disabled || ledger.Any) return base_layer.call(x);
        using var scope = NewDisposeScope();
        var result = base_layer.call(x);
        foreach (var a in ActiveAdapters)
        {
            if (!settings.TryGetValue(a, out var s) || LycorisOps.SkipModule(s.ModuleDropout, training)) continue;
            var delta = DeltaOutIn(a);
            if (training && s.RankDropout > 0) delta = LycorisOps.RankDropout(delta, s.RankDropout, rescale: true);
            result = result + nn.functional.linear(x.to(delta.dtype), delta).to(result.dtype);
        }
        return result.MoveToOuterDisposeScope();
    }

    public void MergeInPlace(IReadOnlyList<string> adapters, bool safe)
    {
        ledger.MergeDeltasInPlace(base_layer, adapters.Where(settings.ContainsKey), DeltaOutIn, safe);
    }

    public void UnmergeInPlace() => ledger.UndoAllInPlace(base_layer);

    public void DeleteAdapter(string adapter)
    {
        if (ledger.Contains(adapter)) throw new InvalidOperationException($"adapter '{adapter}' is merged; unmerge it before deleting");
        hada_w1_a.Remove(adapter); hada_w1_b.Remove(adapter); hada_w2_a.Remove(adapter); hada_w2_b.Remove(adapter);
        settings.Remove(adapter);
        ActiveAdapters = ActiveAdapters.Where(a => a != adapter).ToList();
    }

    public IEnumerable<(string Key, Tensor Value)> StateDict(string adapter) =>
    [
        ("hada_w1_a", hada_w1_a[adapter]), ("hada_w1_b", hada_w1_b[adapter]),
        ("hada_w2_a", hada_w2_a[adapter]), ("hada_w2_b", hada_w2_b[adapter]),
    ];

    public void LoadStateDict(string adapter, IReadOnlyDictionary<string, Tensor> tensors, string modulePath, string source) =>
        AdapterTensors.CopyInto(StateDict(adapter), tensors, modulePath, adapter, source,
            $"in={inFeatures}, out={outFeatures}, r={settings[adapter].R}");

    public IEnumerable<Parameter> AdapterParameters(string adapter) => StateDict(adapter).Select(kv => (Parameter)kv.Value);
}
