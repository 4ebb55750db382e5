using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace PeftSharp.Tuners.AdaLora;

/// <summary>
/// Wraps a Linear or GPT-2 Conv1D (<c>base_layer</c>): h = W x + (alpha / ranknum) P (Λ ⊙ Q) x with Q = <c>lora_A</c>
/// [r, in], Λ = <c>lora_E</c> [r, 1], P = <c>lora_B</c> [out, r]. ranknum is the initial rank and stays so when
/// singular values are pruned (masked to zero) or dropped on load, so the scale does not jump.
/// </summary>
public sealed class AdaLoraLayer : Module<Tensor, Tensor>, IDeltaWeightLayer
{
    sealed record Settings(double Scaling, double RankNum, double Dropout);

    readonly AdapterBook<Settings> book;

    Module<Tensor, Tensor> base_layer;
    ParameterDict lora_A = new(), lora_B = new(), lora_E = new();

    public AdaLoraLayer(Module<Tensor, Tensor> baseLayer) : base("AdaLoraLayer")
    {
        (InFeatures, OutFeatures) = BaseLayers.LinearFeatures(baseLayer, "AdaLoRA", conv1D: true);
        base_layer = baseLayer;
        book = new AdapterBook<Settings>(baseLayer);
        RegisterComponents();
    }

    public long InFeatures { get; }
    public long OutFeatures { get; }
    public Module BaseLayer => base_layer;
    public IAdapterBook Book => book;

    /// <summary>Q [r, in], the right singular vectors.</summary>
    public Parameter A(string adapter) => lora_A[adapter];
    /// <summary>P [out, r], the left singular vectors.</summary>
    public Parameter B(string adapter) => lora_B[adapter];
    /// <summary>Λ [r, 1], the singular values (pruned ones are zero).</summary>
    public Parameter E(string adapter) => lora_E[adapter];
    public int Rank(string adapter) => (int)lora_A[adapter].shape[0];

    /// <summary>Adds an adapter of rank <paramref name="r"/> (0 allowed: a layer that kept nothing) scaled by alpha / <paramref name="rankNum"/>.</summary>
    public void AddAdapter(string name, int r, int rankNum, AdaLoraConfig c)
    {
        book.CheckNew(name);
        if (r < 0) throw new ArgumentException($"AdaLoRA rank must be 0 or more, got {r}");
        var device = BaseLayers.Weight(base_layer).device;
        using var _ = no_grad();
        var a = randn(r, InFeatures, device: device);
        var e = randn(r, 1, device: device);
        var b = randn(OutFeatures, r, device: device);
        if (c.InitLoraWeights)
        {
            e.zero_();
            a.normal_(0, 0.02);
            b.normal_(0, 0.02);
        }
        lora_A.Add(name, new Parameter(a));
        lora_E.Add(name, new Parameter(e));
        lora_B.Add(name, new Parameter(b));
        double scaling = c.LoraAlpha > 0 ? c.LoraAlpha : rankNum;
        book.Add(name, new Settings(scaling, rankNum, c.LoraDropout));
    }

    // PEFT divides by ranknum + 1e-5.
    double Scale(string a) => book[a].Scaling / (book[a].RankNum + 1e-5);

    /// <summary>(alpha / ranknum) P (Λ ⊙ Q) in the base weight's storage layout.</summary>
    public Tensor DeltaWeight(string adapter)
    {
        using var scope = NewDisposeScope();
        var delta = SvdProduct.Delta(lora_A[adapter], lora_E[adapter], lora_B[adapter], Scale(adapter));
        return BaseLayers.ToStorage(base_layer, delta).MoveToOuterDisposeScope();
    }

    public override Tensor forward(Tensor x)
    {
        if (book.RunsBaseOnly) return base_layer.call(x);
        using var scope = NewDisposeScope();
        var result = base_layer.call(x);
        foreach (var (a, s) in book.ActiveAdapters)
        {
            var xa = x.to(lora_A[a].dtype);
            if (s.Dropout > 0) xa = nn.functional.dropout(xa, s.Dropout, book.Training);
            var update = SvdProduct.Apply(xa, lora_A[a], lora_E[a], lora_B[a], Scale(a));
            result = result + update.to(result.dtype);
        }
        return result.MoveToOuterDisposeScope();
    }

    public void RemoveTensors(string adapter)
    {
        lora_A.Remove(adapter); lora_B.Remove(adapter); lora_E.Remove(adapter);
    }

    public IEnumerable<(string Key, Tensor Value)> StateDict(string adapter) =>
        [("lora_A", lora_A[adapter]), ("lora_B", lora_B[adapter]), ("lora_E", lora_E[adapter])];

    public string Describe(string adapter) =>
        $"in={InFeatures}, out={OutFeatures}, r={Rank(adapter)} (init_r, or the count kept in rank_pattern)";
}
