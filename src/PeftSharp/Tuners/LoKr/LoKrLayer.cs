using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace PeftSharp.Tuners.LoKr;

/// <summary>
/// Wraps a Linear (<c>base_layer</c>): h = W x + dW x with dW = (alpha/r) W1 ⊗ W2. Each factor is stored whole
/// (<c>lokr_w1</c>, <c>lokr_w2</c>) or as a rank-r product (<c>lokr_w1_a</c> @ <c>lokr_w1_b</c>, ...), per <see cref="LoKrShapes"/>.
/// </summary>
public sealed class LoKrLayer : Module<Tensor, Tensor>, IDeltaWeightLayer
{
    sealed record Settings(int R, double Alpha, double RankDropout, bool RankDropoutScale, double ModuleDropout, LoKrShapes Shapes)
    {
        public double Scaling => Alpha / R;
    }

    readonly long inFeatures, outFeatures;
    readonly Dictionary<string, Settings> settings = new();
    readonly MergeLedger ledger = new();

    Module<Tensor, Tensor> base_layer;
    ParameterDict lokr_w1 = new(), lokr_w1_a = new(), lokr_w1_b = new();
    ParameterDict lokr_w2 = new(), lokr_w2_a = new(), lokr_w2_b = new();

    public LoKrLayer(Module<Tensor, Tensor> baseLayer) : base("LoKrLayer")
    {
        (inFeatures, outFeatures) = BaseLayers.LinearFeatures(baseLayer, "LoKr");
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
    public LoKrShapes Shapes(string adapter) => settings[adapter].Shapes;

    public void AddAdapter(string name, int r, double alpha, LoKrConfig c)
    {
        if (settings.ContainsKey(name)) throw new ArgumentException($"adapter '{name}' already exists on this layer");
        if (r <= 0) throw new ArgumentException($"LoKr rank must be positive, got {r}");
        if (c.InitWeights is not ("true" or "false" or "lycoris"))
            throw new ArgumentException($"init_weights '{c.InitWeights}' is not supported by LoKr; use true, false or \"lycoris\"");
        var s = LoKrShapes.For(inFeatures, outFeatures, r, c.DecomposeBoth, c.DecomposeFactor);
        var device = BaseLayers.Weight(base_layer).device;
        using var _ = no_grad();
        Parameter New(long rows, long cols, bool zero)
        {
            var p = new Parameter(empty(rows, cols, dtype: ScalarType.Float32, device: device));
            if (zero) p.zero_();
            else nn.init.kaiming_uniform_(p, Math.Sqrt(5));
            return p;
        }
        // One factor starts at zero so that dW = 0: W1 (or W1a) by default, W2 (or W2b) in LyCORIS's way.
        bool zeroW1 = c.InitWeights == "true", zeroW2 = c.InitWeights == "lycoris";
        if (s.FullW1) lokr_w1.Add(name, New(s.OutA, s.InC, zeroW1));
        else { lokr_w1_a.Add(name, New(s.OutA, r, zeroW1)); lokr_w1_b.Add(name, New(r, s.InC, false)); }
        if (s.FullW2) lokr_w2.Add(name, New(s.OutB, s.InD, zeroW2));
        else { lokr_w2_a.Add(name, New(s.OutB, r, false)); lokr_w2_b.Add(name, New(r, s.InD, zeroW2)); }
        settings[name] = new Settings(r, alpha, c.RankDropout, c.RankDropoutScale, c.ModuleDropout, s);
    }

    Tensor DeltaOutIn(string a)
    {
        using var scope = NewDisposeScope();
        var s = settings[a].Shapes;
        var w1 = s.FullW1 ? lokr_w1[a] : matmul(lokr_w1_a[a], lokr_w1_b[a]); // [a, c]
        var w2 = s.FullW2 ? lokr_w2[a] : matmul(lokr_w2_a[a], lokr_w2_b[a]); // [b, d]
        return (kron(w1, w2) * settings[a].Scaling).MoveToOuterDisposeScope(); // [a b, c d] = [out, in]
    }

    /// <summary>(alpha/r) W1 ⊗ W2, [out, in].</summary>
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
            if (training && s.RankDropout > 0) delta = LycorisOps.RankDropout(delta, s.RankDropout, s.RankDropoutScale);
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
        foreach (var d in new[] { lokr_w1, lokr_w1_a, lokr_w1_b, lokr_w2, lokr_w2_a, lokr_w2_b }) d.Remove(adapter);
        settings.Remove(adapter);
        ActiveAdapters = ActiveAdapters.Where(a => a != adapter).ToList();
    }

    public IEnumerable<(string Key, Tensor Value)> StateDict(string adapter)
    {
        var s = settings[adapter].Shapes;
        if (s.FullW1) yield return ("lokr_w1", lokr_w1[adapter]);
        else { yield return ("lokr_w1_a", lokr_w1_a[adapter]); yield return ("lokr_w1_b", lokr_w1_b[adapter]); }
        if (s.FullW2) yield return ("lokr_w2", lokr_w2[adapter]);
        else { yield return ("lokr_w2_a", lokr_w2_a[adapter]); yield return ("lokr_w2_b", lokr_w2_b[adapter]); }
    }

    public void LoadStateDict(string adapter, IReadOnlyDictionary<string, Tensor> tensors, string modulePath, string source)
    {
        var s = settings[adapter];
        AdapterTensors.CopyInto(StateDict(adapter), tensors, modulePath, adapter, source,
            $"in={inFeatures}={s.Shapes.InC}x{s.Shapes.InD}, out={outFeatures}={s.Shapes.OutA}x{s.Shapes.OutB}, r={s.R}, " +
            $"W1 {(s.Shapes.FullW1 ? "whole" : "rank-r")}, W2 {(s.Shapes.FullW2 ? "whole" : "rank-r")}");
    }

    public IEnumerable<Parameter> AdapterParameters(string adapter) => StateDict(adapter).Select(kv => (Parameter)kv.Value);
}
