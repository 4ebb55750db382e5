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
    readonly AdapterBook<NoSettings> book;

    Module<Tensor, Tensor> base_layer;
    ParameterDict ia3_l = new();

    public IA3Layer(Module<Tensor, Tensor> baseLayer, bool isFeedforward) : base("IA3Layer")
    {
        (inFeatures, outFeatures) = BaseLayers.LinearFeatures(baseLayer, "(IA)^3", conv1D: true);
        base_layer = baseLayer;
        IsFeedforward = isFeedforward;
        book = new AdapterBook<NoSettings>(baseLayer);
        RegisterComponents();
    }

    public bool IsFeedforward { get; }
    public Module BaseLayer => base_layer;
    public IAdapterBook Book => book;
    public bool CanMerge => true;

    public void AddAdapter(string name, bool initOnes)
    {
        book.CheckNew(name);
        var device = BaseLayers.Weight(base_layer).device;
        long[] shape = IsFeedforward ? [1, inFeatures] : [outFeatures, 1];
        using var _ = no_grad();
        var l = initOnes ? ones(shape, dtype: ScalarType.Float32, device: device) : randn(shape, dtype: ScalarType.Float32, device: device);
        ia3_l.Add(name, new Parameter(l));
        book.Add(name, default);
    }

    // The product of the active adapters' vectors, flattened: [in] or [out].
    Tensor? Scaling()
    {
        Tensor? s = null;
        foreach (var (a, _) in book.ActiveAdapters)
            s = s is null ? ia3_l[a].flatten() : s * ia3_l[a].flatten();
        return s;
    }

    public override Tensor forward(Tensor x)
    {
        if (book.RunsBaseOnly) return base_layer.call(x);
        using var scope = NewDisposeScope();
        var s = Scaling()!;
        var result = IsFeedforward
            ? base_layer.call((x.to(s.dtype) * s).to(x.dtype))
            : (base_layer.call(x).to(s.dtype) * s).to(x.dtype);
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>W' = W diag(l) (feed-forward) or diag(l) W and b' = l ⊙ b (output scaling).</summary>
    public void MergeInPlace(IReadOnlyList<string> adapters, bool safe)
    {
        foreach (var a in book.ToMerge(adapters).ToList())
        {
            using var scope = NewDisposeScope();
            var l = ia3_l[a].detach();
            var w = BaseLayers.WeightOutIn(base_layer).to(ScalarType.Float32);
            var merged = BaseLayers.ToStorage(base_layer, w * l); // [out,in] * [1,in] or [out,1]
            var values = new List<(Parameter, Tensor)> { (BaseLayers.Weight(base_layer), merged) };
            if (!IsFeedforward && BaseLayers.Bias(base_layer) is { } bias) values.Add((bias, bias.to(ScalarType.Float32) * l.flatten()));
            book.Write(a, values, safe);
        }
    }

    public void RemoveTensors(string adapter) => ia3_l.Remove(adapter);

    public IEnumerable<(string Key, Tensor Value)> StateDict(string adapter)
    {
        yield return ("ia3_l", ia3_l[adapter]);
    }

    public string Describe(string adapter) =>
        $"in={inFeatures}, out={outFeatures}, {(IsFeedforward ? "feed-forward: scales the input" : "scales the output")}";
}
