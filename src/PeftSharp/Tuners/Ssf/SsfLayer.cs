using PeftSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace PeftSharp.Tuners.Ssf;

/// <summary>
/// Wraps a module (<c>base_layer</c>) and scales and shifts its output's last dimension per adapter:
/// y = gamma * base(x) + beta, adapters applied in turn. Mergeable into Linear, Conv1D, LayerNorm and RMSNorm
/// weights; the shift needs a bias to go into, so a bias-free layer (Llama's) merges only while every beta is zero.
/// </summary>
public sealed class SsfLayer : Module<Tensor, Tensor>, ITunerLayer
{
    readonly long channels;
    readonly AdapterBook<NoSettings> book;

    Module<Tensor, Tensor> base_layer;
    ParameterDict ssf_scale = new(), ssf_shift = new();

    /// <param name="channels">size of the output's last dimension (read from the layer when it has weights).</param>
    public SsfLayer(Module<Tensor, Tensor> baseLayer, long channels) : base("SsfLayer")
    {
        base_layer = baseLayer;
        this.channels = Parts(baseLayer).Channels ?? channels;
        book = new AdapterBook<NoSettings>(baseLayer);
        RegisterComponents();
    }

    public Module BaseLayer => base_layer;
    public IAdapterBook Book => book;

    /// <summary>The layer has a weight to scale, and a bias for the shift (or no shift yet).</summary>
    public bool CanMerge
    {
        get
        {
            var (w, b, _) = Parts(base_layer);
            if (w is null) return false;
            using var _ = no_grad();
            return b is not null || ssf_shift.values().All(t => t.count_nonzero().item<long>() == 0);
        }
    }

    public void AddAdapter(string name, Device device)
    {
        book.CheckNew(name);
        ssf_scale.Add(name, new Parameter(ones(channels, ScalarType.Float32, device)));
        ssf_shift.Add(name, new Parameter(zeros(channels, ScalarType.Float32, device)));
        book.Add(name, default);
    }

    public override Tensor forward(Tensor x)
    {
        if (book.RunsBaseOnly) return base_layer.call(x);
        using var scope = NewDisposeScope();
        var y = base_layer.call(x);
        var dtype = y.dtype;
        foreach (var (a, _) in book.ActiveAdapters) y = y.to(ScalarType.Float32) * ssf_scale[a] + ssf_shift[a];
        return y.to(dtype).MoveToOuterDisposeScope();
    }

    public IEnumerable<(string Key, Tensor Value)> StateDict(string adapter)
    {
        yield return ("ssf_scale", ssf_scale[adapter]);
        yield return ("ssf_shift", ssf_shift[adapter]);
    }

    public string Describe(string adapter) => $"{channels} channels";

    /// <summary>W' = gamma * W per output channel, b' = gamma * b + beta, for each adapter in turn.</summary>
    public void MergeInPlace(IReadOnlyList<string> adapters, bool safe)
    {
        var (w, b, _) = Parts(base_layer);
        if (w is null) throw new NotSupportedException($"SSF cannot merge into a {base_layer.GetType().Name} (no weight); keep it unmerged");
        using var _ = no_grad();
        foreach (var a in book.ToMerge(adapters).ToList())
        {
            if (b is null && ssf_shift[a].count_nonzero().item<long>() > 0)
                throw new NotSupportedException($"SSF adapter '{a}': its shift cannot be merged into a {base_layer.GetType().Name} without a bias " +
                    "(Llama's layers are bias-free); keep the adapter unmerged");
            using var scope = NewDisposeScope();
            var scale = ssf_scale[a];
            // Linear stores [out, in]: scale rows; Conv1D stores [in, out] and norms [channels]: scale the last dim.
            var newW = base_layer is Linear ? w.to(ScalarType.Float32) * scale.unsqueeze(1) : w.to(ScalarType.Float32) * scale;
            var newB = b is null ? null : b.to(ScalarType.Float32) * scale + ssf_shift[a];
            var values = new List<(Parameter, Tensor)> { (w, newW) };
            if (b is not null) values.Add((b, newB!));
            book.Write(a, values, safe);
        }
    }

    public void RemoveTensors(string adapter)
    {
        ssf_scale.Remove(adapter);
        ssf_shift.Remove(adapter);
    }

    // The parameters SSF merges into, and the channel count when the layer says it.
    static (Parameter? Weight, Parameter? Bias, long? Channels) Parts(Module m) => m switch
    {
        Linear l => (l.weight, l.bias, l.out_features),
        Conv1D c => (c.weight, c.bias, c.OutFeatures),
        LayerNorm n => (n.weight, n.bias, n.normalized_shape[^1]),
        RmsNorm r => (r.weight, null, r.weight.shape[0]),
        _ => (null, null, null),
    };
}
