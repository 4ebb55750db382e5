using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace PeftSharp.Tuners.Vera;

/// <summary>
/// Wraps a Linear or GPT-2 Conv1D (<c>base_layer</c>): h = W x + λb ⊙ (B (λd ⊙ (A x))), with A, B the shared frozen
/// projections sliced to this layer's size and the trained vectors <c>vera_lambda_b</c> [out], <c>vera_lambda_d</c> [r].
/// </summary>
public sealed class VeraLayer : Module<Tensor, Tensor>, IDeltaWeightLayer
{
    sealed record Settings(VeraProjections Projections, double Dropout);

    readonly AdapterBook<Settings> book;

    Module<Tensor, Tensor> base_layer;
    ParameterDict vera_lambda_b = new(), vera_lambda_d = new();

    public VeraLayer(Module<Tensor, Tensor> baseLayer) : base("VeraLayer")
    {
        (InFeatures, OutFeatures) = BaseLayers.LinearFeatures(baseLayer, "VeRA", conv1D: true);
        base_layer = baseLayer;
        book = new AdapterBook<Settings>(baseLayer);
        RegisterComponents();
    }

    public long InFeatures { get; }
    public long OutFeatures { get; }
    public Module BaseLayer => base_layer;
    public IAdapterBook Book => book;

    public void AddAdapter(string name, VeraProjections projections, VeraConfig c)
    {
        book.CheckNew(name);
        if (projections.A.shape[1] < InFeatures || projections.B.shape[0] < OutFeatures)
            throw new ArgumentException($"VeRA projections {AdapterTensors.Shape(projections.A)}, {AdapterTensors.Shape(projections.B)} are too small for a layer with in={InFeatures}, out={OutFeatures}");
        var device = BaseLayers.Weight(base_layer).device;
        long r = projections.A.shape[0];
        using var _ = no_grad();
        var lambdaB = c.InitWeights ? zeros(OutFeatures, device: device) : ones(OutFeatures, device: device);
        var lambdaD = c.InitWeights ? full(r, c.DInitial, device: device) : randn(r, device: device);
        vera_lambda_b.Add(name, new Parameter(lambdaB));
        vera_lambda_d.Add(name, new Parameter(lambdaD));
        book.Add(name, new Settings(projections, c.VeraDropout));
    }

    Tensor SlicedA(string a) => book[a].Projections.A.narrow(1, 0, InFeatures); // [r, in]
    Tensor SlicedB(string a) => book[a].Projections.B.narrow(0, 0, OutFeatures); // [out, r]

    /// <summary>(λb ⊙ B)(λd ⊙ A): [out, in], in the base weight's storage layout.</summary>
    public Tensor DeltaWeight(string adapter)
    {
        using var scope = NewDisposeScope();
        var delta = matmul(vera_lambda_b[adapter].unsqueeze(-1) * SlicedB(adapter), vera_lambda_d[adapter].unsqueeze(-1) * SlicedA(adapter));
        return BaseLayers.ToStorage(base_layer, delta).MoveToOuterDisposeScope();
    }

    public override Tensor forward(Tensor x)
    {
        if (book.RunsBaseOnly) return base_layer.call(x);
        using var scope = NewDisposeScope();
        var result = base_layer.call(x);
        foreach (var (a, s) in book.ActiveAdapters)
        {
            var lambdaB = vera_lambda_b[a];
            var xa = x.to(lambdaB.dtype);
            if (s.Dropout > 0) xa = nn.functional.dropout(xa, s.Dropout, book.Training);
            var down = vera_lambda_d[a] * nn.functional.linear(xa, SlicedA(a)); // [.., r]
            result = result + (lambdaB * nn.functional.linear(down, SlicedB(a))).to(result.dtype);
        }
        return result.MoveToOuterDisposeScope();
    }

    public void RemoveTensors(string adapter)
    {
        vera_lambda_b.Remove(adapter); vera_lambda_d.Remove(adapter);
    }

    public IEnumerable<(string Key, Tensor Value)> StateDict(string adapter) =>
        [("vera_lambda_b", vera_lambda_b[adapter]), ("vera_lambda_d", vera_lambda_d[adapter])];

    public string Describe(string adapter) => $"in={InFeatures}, out={OutFeatures}, r={vera_lambda_d[adapter].shape[0]}";
}
