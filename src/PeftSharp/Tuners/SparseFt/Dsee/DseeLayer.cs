using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace PeftSharp.Tuners.SparseFt.Dsee;

/// <summary>
/// Wraps a Linear (<c>base_layer</c>): h = (W + S₂) x + b + (α/r) B A dropout(x), S₂ = scatter(Ω, values).
/// The sparse part is a <see cref="SparseWeightDelta"/> (only its K values train); the LoRA part is PEFT's.
/// </summary>
public sealed class DseeLayer : Module<Tensor, Tensor>, IDeltaWeightLayer
{
    sealed record Settings(double Scaling, double Dropout);

    readonly AdapterBook<Settings> book;
    readonly Dictionary<string, SparseWeightDelta> sparse = new();

    Module<Tensor, Tensor> base_layer;
    ParameterDict lora_A = new(), lora_B = new(), sparse_values = new();

    public DseeLayer(Module<Tensor, Tensor> baseLayer) : base("DseeLayer")
    {
        (InFeatures, OutFeatures) = BaseLayers.LinearFeatures(baseLayer, "DSEE");
        base_layer = baseLayer;
        book = new AdapterBook<Settings>(baseLayer);
        RegisterComponents();
    }

    public long InFeatures { get; }
    public long OutFeatures { get; }
    public Module BaseLayer => base_layer;
    public IAdapterBook Book => book;
    public Parameter Weight => BaseLayers.Weight(base_layer);

    public SparseWeightDelta Sparse(string adapter) => sparse[adapter];
    public Parameter A(string adapter) => lora_A[adapter];
    public Parameter B(string adapter) => lora_B[adapter];
    public double Scaling(string adapter) => book[adapter].Scaling;

    /// <param name="support">Ω: distinct flat indices into W [out, in].</param>
    public void AddAdapter(string name, DseeConfig c, Tensor support)
    {
        book.CheckNew(name);
        var device = Weight.device;
        using var _ = no_grad();
        var a = empty(c.R, InFeatures, device: device);
        nn.init.kaiming_uniform_(a, Math.Sqrt(5));
        var b = c.InitWeights ? zeros(OutFeatures, c.R, device: device) : randn(OutFeatures, c.R, device: device) * 0.1;
        var values = c.InitWeights ? zeros(support.shape[0], device: device) : randn(support.shape[0], device: device) * 0.02;
        lora_A.Add(name, new Parameter(a.DetachFromDisposeScope()));
        lora_B.Add(name, new Parameter(b.DetachFromDisposeScope()));
        var v = new Parameter(values.DetachFromDisposeScope());
        sparse_values.Add(name, v);
        sparse[name] = new SparseWeightDelta(support.to(ScalarType.Int64).to(device).DetachFromDisposeScope(), v, Weight.shape);
        book.Add(name, new Settings(c.LoraAlpha / c.R, c.LoraDropout));
    }

    /// <summary>(α/r) B A + S₂, [out, in].</summary>
    public Tensor DeltaWeight(string adapter)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var delta = Scaling(adapter) * B(adapter).matmul(A(adapter)) + sparse[adapter].ToDense();
        return delta.MoveToOuterDisposeScope();
    }

    public override Tensor forward(Tensor x)
    {
        if (book.RunsBaseOnly) return base_layer.call(x);
        using var scope = NewDisposeScope();
        Tensor w = Weight;
        foreach (var (a, _) in book.ActiveAdapters) w = sparse[a].AddTo(w);
        var y = functional.linear(x, w, BaseLayers.Bias(base_layer));
        foreach (var (a, s) in book.ActiveAdapters)
        {
            var xa = x.to(lora_A[a].dtype);
            if (s.Dropout > 0) xa = functional.dropout(xa, s.Dropout, book.Training);
            y = y + (s.Scaling * functional.linear(functional.linear(xa, lora_A[a]), lora_B[a])).to(y.dtype);
        }
        return y.MoveToOuterDisposeScope();
    }

    public void RemoveTensors(string adapter)
    {
        lora_A.Remove(adapter); lora_B.Remove(adapter); sparse_values.Remove(adapter);
        sparse.Remove(adapter);
    }

    public IEnumerable<Parameter> AdapterParameters(string adapter) => [lora_A[adapter], lora_B[adapter], sparse[adapter].Values];

    public IEnumerable<(string Key, Tensor Value)> StateDict(string adapter) =>
        [("lora_A", lora_A[adapter]), ("lora_B", lora_B[adapter]), ("sparse_indices", sparse[adapter].Indices), ("sparse_values", sparse[adapter].Values)];

    public void LoadStateDict(string adapter, IReadOnlyDictionary<string, Tensor> tensors, string modulePath, string source)
    {
        AdapterTensors.CopyInto(StateDict(adapter), tensors, modulePath, adapter, source, Describe(adapter));
        using var scope = NewDisposeScope();
        var idx = sparse[adapter].Indices;
        if (!(idx.ge(0).all().item<bool>() && idx.lt(OutFeatures * InFeatures).all().item<bool>()) || idx.unique().Item1.shape[0] != idx.shape[0])
            throw new InvalidDataException($"{source}: tensor '{modulePath}.sparse_indices' must hold distinct indices into the weight {AdapterTensors.Shape(Weight)}: is this adapter for another model?");
    }

    public string Describe(string adapter) => $"in={InFeatures}, out={OutFeatures}, r={lora_A[adapter].shape[0]}, {sparse[adapter].K} sparse entries";
}
