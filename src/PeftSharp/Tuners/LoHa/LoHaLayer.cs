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
    readonly AdapterBook<Settings> book;

    Module<Tensor, Tensor> base_layer;
    ParameterDict hada_w1_a = new(), hada_w1_b = new(), hada_w2_a = new(), hada_w2_b = new();

    public LoHaLayer(Module<Tensor, Tensor> baseLayer) : base("LoHaLayer")
    {
        (inFeatures, outFeatures) = BaseLayers.LinearFeatures(baseLayer, "LoHa");
        base_layer = baseLayer;
        book = new AdapterBook<Settings>(baseLayer);
        RegisterComponents();
    }

    public Module BaseLayer => base_layer;
    public IAdapterBook Book => book;
    public double Scaling(string adapter) => book[adapter].Scaling;

    public void AddAdapter(string name, int r, double alpha, LoHaConfig c)
    {
        book.CheckNew(name);
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
        book.Add(name, new Settings(r, alpha, c.RankDropout, c.ModuleDropout));
    }

    Tensor DeltaOutIn(string a)
    {
        using var scope = NewDisposeScope();
        var delta = matmul(hada_w1_a[a], hada_w1_b[a]) * matmul(hada_w2_a[a], hada_w2_b[a]) * book[a].Scaling;
        return delta.MoveToOuterDisposeScope();
    }

    /// <summary>(alpha/r) (W1a W1b) ⊙ (W2a W2b), [out, in].</summary>
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
            if (training && s.RankDropout > 0) delta = LycorisOps.RankDropout(delta, s.RankDropout, rescale: true);
            result = result + nn.functional.linear(x.to(delta.dtype), delta).to(result.dtype);
        }
        return result.MoveToOuterDisposeScope();
    }

    public void RemoveTensors(string adapter)
    {
        hada_w1_a.Remove(adapter); hada_w1_b.Remove(adapter); hada_w2_a.Remove(adapter); hada_w2_b.Remove(adapter);
    }

    public IEnumerable<(string Key, Tensor Value)> StateDict(string adapter) =>
    [
        ("hada_w1_a", hada_w1_a[adapter]), ("hada_w1_b", hada_w1_b[adapter]),
        ("hada_w2_a", hada_w2_a[adapter]), ("hada_w2_b", hada_w2_b[adapter]),
    ];

    public string Describe(string adapter) => $"in={inFeatures}, out={outFeatures}, r={book[adapter].R}";
}
