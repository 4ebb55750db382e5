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
    readonly AdapterBook<Settings> book;

    Module<Tensor, Tensor> base_layer;
    ParameterDict lokr_w1 = new(), lokr_w1_a = new(), lokr_w1_b = new();
    ParameterDict lokr_w2 = new(), lokr_w2_a = new(), lokr_w2_b = new();

    public LoKrLayer(Module<Tensor, Tensor> baseLayer) : base("LoKrLayer")
    {
        (inFeatures, outFeatures) = BaseLayers.LinearFeatures(baseLayer, "LoKr");
        base_layer = baseLayer;
        book = new AdapterBook<Settings>(baseLayer);
        RegisterComponents();
    }

    public Module BaseLayer => base_layer;
    public IAdapterBook Book => book;
    public LoKrShapes Shapes(string adapter) => book[adapter].Shapes;

    public void AddAdapter(string name, int r, double alpha, LoKrConfig c)
    {
        book.CheckNew(name);
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
        book.Add(name, new Settings(r, alpha, c.RankDropout, c.RankDropoutScale, c.ModuleDropout, s));
    }

    Tensor DeltaOutIn(string a)
    {
        using var scope = NewDisposeScope();
        var s = book[a].Shapes;
        var w1 = s.FullW1 ? lokr_w1[a] : matmul(lokr_w1_a[a], lokr_w1_b[a]); // [a, c]
        var w2 = s.FullW2 ? lokr_w2[a] : matmul(lokr_w2_a[a], lokr_w2_b[a]); // [b, d]
        return (kron(w1, w2) * book[a].Scaling).MoveToOuterDisposeScope(); // [a b, c d] = [out, in]
    }

    /// <summary>(alpha/r) W1 ⊗ W2, [out, in].</summary>
    public Tensor DeltaWeight(string adapter) => DeltaOutIn(adapter);

    public override Tensor forward(Tensor x)
    {
        if (book.RunsBaseOnly) return base_layer.call(x);
        using var scope = NewDisposeScope();
        var result = base_layer.call(x);
        bool training = book.Training;
        foreach (var (a, s) in book.ActiveAdapters)
        {
            if (LycorisOps.SkipModule(s.ModuleDropout, training)) continue;
            var delta = DeltaOutIn(a);
            if (training && s.RankDropout > 0) delta = LycorisOps.RankDropout(delta, s.RankDropout, s.RankDropoutScale);
            result = result + nn.functional.linear(x.to(delta.dtype), delta).to(result.dtype);
        }
        return result.MoveToOuterDisposeScope();
    }

    public void RemoveTensors(string adapter)
    {
        foreach (var d in new[] { lokr_w1, lokr_w1_a, lokr_w1_b, lokr_w2, lokr_w2_a, lokr_w2_b }) d.Remove(adapter);
    }

    public IEnumerable<(string Key, Tensor Value)> StateDict(string adapter)
    {
        var s = book[adapter].Shapes;
        if (s.FullW1) yield return ("lokr_w1", lokr_w1[adapter]);
        else { yield return ("lokr_w1_a", lokr_w1_a[adapter]); yield return ("lokr_w1_b", lokr_w1_b[adapter]); }
        if (s.FullW2) yield return ("lokr_w2", lokr_w2[adapter]);
        else { yield return ("lokr_w2_a", lokr_w2_a[adapter]); yield return ("lokr_w2_b", lokr_w2_b[adapter]); }
    }

    public string Describe(string adapter)
    {
        var s = book[adapter];
        return $"in={inFeatures}={s.Shapes.InC}x{s.Shapes.InD}, out={outFeatures}={s.Shapes.OutA}x{s.Shapes.OutB}, r={s.R}, " +
            $"W1 {(s.Shapes.FullW1 ? "whole" : "rank-r")}, W2 {(s.Shapes.FullW2 ? "whole" : "rank-r")}";
    }
}
