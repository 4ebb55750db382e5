using PeftSharp.Tuners.AdaLora;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace PeftSharp.Tuners.IncreLora;

/// <summary>
/// Wraps a Linear or GPT-2 Conv1D (<c>base_layer</c>): h = W x + (alpha / r) P (Λ ⊙ Q) x with Q = <c>lora_A</c> [r, in],
/// Λ = <c>lora_E</c> [r, 1], P = <c>lora_B</c> [out, r], as AdaLoRA, except that r grows during training
/// (<see cref="GrowInPlace"/>): the three parameters keep their identity and take new rows/columns at the end, so the
/// optimizer and the trainer keep holding them.
/// </summary>
public sealed class IncreLoraLayer : Module<Tensor, Tensor>, IDeltaWeightLayer
{
    sealed record Settings(double Alpha, double Dropout);

    readonly AdapterBook<Settings> book;

    Module<Tensor, Tensor> base_layer;
    ParameterDict lora_A = new(), lora_B = new(), lora_E = new();

    public IncreLoraLayer(Module<Tensor, Tensor> baseLayer) : base("IncreLoraLayer")
    {
        (InFeatures, OutFeatures) = BaseLayers.LinearFeatures(baseLayer, "IncreLoRA", conv1D: true);
        base_layer = baseLayer;
        book = new AdapterBook<Settings>(baseLayer);
        RegisterComponents();
    }

    public long InFeatures { get; }
    public long OutFeatures { get; }
    public Module BaseLayer => base_layer;
    public IAdapterBook Book => book;

    public Parameter A(string adapter) => lora_A[adapter];
    public Parameter B(string adapter) => lora_B[adapter];
    public Parameter E(string adapter) => lora_E[adapter];
    public int Rank(string adapter) => (int)lora_A[adapter].shape[0];

    /// <summary>alpha / r (PEFT's AdaLoRA adds 1e-5 to r, and so do the authors).</summary>
    public double Scale(string adapter) => book[adapter].Alpha / (Rank(adapter) + 1e-5);

    /// <summary>Adds an adapter of rank <paramref name="r"/>: Λ = 0, P and Q normal(0, 0.02), so the model is unchanged.</summary>
    public void AddAdapter(string name, int r, IncreLoraConfig c)
    {
        book.CheckNew(name);
        if (r <= 0) throw new ArgumentException($"IncreLoRA init_r must be positive, got {r}");
        var device = BaseLayers.Weight(base_layer).device;
        using var _ = no_grad();
        lora_A.Add(name, new Parameter(empty(r, InFeatures, device: device).normal_(0, 0.02)));
        lora_E.Add(name, new Parameter(zeros(r, 1, device: device)));
        lora_B.Add(name, new Parameter(empty(OutFeatures, r, device: device).normal_(0, 0.02)));
        book.Add(name, new Settings(c.LoraAlpha, c.LoraDropout));
    }

    /// <summary>
    /// Adds <paramref name="count"/> rank-1 components in place: new rows of Q and columns of P drawn normal(0, 0.02)
    /// (zero with <paramref name="random"/> false, for a checkpoint to fill), new Λ entries zero. The old Λ is multiplied
    /// by (r + count) / r so that alpha / r × Λ, and so the output, is unchanged. Gradients are cleared.
    /// </summary>
    public void GrowInPlace(string adapter, int count, bool random = true)
    {
        if (count <= 0) return;
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var (a, e, b) = (A(adapter), E(adapter), B(adapter));
        double before = Scale(adapter);
        var newA = empty(count, InFeatures, device: a.device);
        var newB = empty(OutFeatures, count, device: b.device);
        if (random) { newA.normal_(0, 0.02); newB.normal_(0, 0.02); }
        else { newA.zero_(); newB.zero_(); }
        var grownE = cat([e * 1.0, zeros(count, 1, device: e.device)], 0);
        var grownA = cat([a, newA], 0).DetachFromDisposeScope();
        var grownB = cat([b, newB], 1).DetachFromDisposeScope();
        foreach (var p in new[] { a, e, b }) p.grad = null;
        a.set_(grownA);
        b.set_(grownB);
        grownE.mul_(before / Scale(adapter));
        e.set_(grownE.DetachFromDisposeScope());
    }

    /// <summary>(alpha / r) P (Λ ⊙ Q) in the base weight's storage layout.</summary>
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

    public string Describe(string adapter) => $"in={InFeatures}, out={OutFeatures}, r={Rank(adapter)}";
}
