using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace PeftSharp.Tuners.Bottleneck;

/// <summary>
/// Wraps a module f (<c>base_layer</c>) with bottleneck adapters: sequential ones add s * up(act(down(y))) to the
/// running output y, parallel ones add s * up(act(down(x))) from the input. Adapters train in float32.
/// Not mergeable (the adapter is non-linear); unloading gives the base module back.
/// </summary>
public sealed class BottleneckLayer : Module<Tensor, Tensor>, ITunerLayer
{
    sealed record Settings(bool Parallel, double Scaling, string Activation, double Dropout);

    readonly long inFeatures, outFeatures;
    readonly AdapterBook<Settings> book;

    Module<Tensor, Tensor> base_layer;
    AdapterDict<Linear> adapter_down = new(), adapter_up = new();

    /// <param name="inFeatures">size of the wrapped module's input's last dimension; <paramref name="outFeatures"/>, of its output.</param>
    public BottleneckLayer(Module<Tensor, Tensor> baseLayer, long inFeatures, long outFeatures) : base("BottleneckLayer")
    {
        base_layer = baseLayer;
        this.inFeatures = inFeatures;
        this.outFeatures = outFeatures;
        book = new AdapterBook<Settings>(baseLayer);
        RegisterComponents();
    }

    public Module BaseLayer => base_layer;
    public IAdapterBook Book => book;
    public bool CanMerge => false;

    public void AddAdapter(string name, BottleneckConfig c, Device device)
    {
        book.CheckNew(name);
        bool parallel = c.AdapterType == "parallel";
        long width = Math.Max(1, outFeatures / c.ReductionFactor);
        var f32 = ScalarType.Float32;
        var up = nn.Linear(width, outFeatures, hasBias: true, device: device, dtype: f32);
        using (no_grad())
            foreach (var p in up.parameters()) p.zero_();   // starts as the identity: y = f(x)
        adapter_down.Add(name, nn.Linear(parallel ? inFeatures : outFeatures, width, hasBias: true, device: device, dtype: f32));
        adapter_up.Add(name, up);
        book.Add(name, new Settings(parallel, c.Scaling, c.NonLinearity, c.AdapterDropout));
    }

    public override Tensor forward(Tensor x)
    {
        if (book.RunsBaseOnly) return base_layer.call(x);
        using var scope = NewDisposeScope();
        var y = base_layer.call(x);
        foreach (var (a, s) in book.ActiveAdapters)
        {
            var h = adapter_down[a].call((s.Parallel ? x : y).to(ScalarType.Float32));   // (..., width)
            h = s.Activation switch { "gelu" => nn.functional.gelu(h), "silu" => nn.functional.silu(h), _ => nn.functional.relu(h) };
            if (s.Dropout > 0) h = nn.functional.dropout(h, s.Dropout, book.Training);
            y = y + (adapter_up[a].call(h) * s.Scaling).to(y.dtype);
        }
        return y.MoveToOuterDisposeScope();
    }

    public IEnumerable<(string Key, Tensor Value)> StateDict(string adapter)
    {
        yield return ("adapter_down.weight", adapter_down[adapter].weight!);
        yield return ("adapter_down.bias", adapter_down[adapter].bias!);
        yield return ("adapter_up.weight", adapter_up[adapter].weight!);
        yield return ("adapter_up.bias", adapter_up[adapter].bias!);
    }

    public string Describe(string adapter) =>
        $"in={inFeatures}, out={outFeatures}, {(book[adapter].Parallel ? "parallel" : "sequential")}, width={adapter_down[adapter].weight!.shape[0]}";

    public void MergeInPlace(IReadOnlyList<string> adapters, bool safe) =>
        throw new NotSupportedException("bottleneck adapters are non-linear and cannot be merged into the weights");

    public void RemoveTensors(string adapter)
    {
        adapter_down.Remove(adapter);
        adapter_up.Remove(adapter);
    }
}
