using PeftSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace PeftSharp.Tuners.LnTuning;

/// <summary>
/// Wraps a LayerNorm or RMSNorm (<c>base_layer</c>) and keeps one trainable copy per adapter (<c>ln_tuning_layers</c>,
/// saved as <c>ln_tuning_layers.weight</c> / <c>.bias</c>); the active adapter's copy replaces the original.
/// One adapter at a time, as in PEFT: a copy is a whole layer, not a delta that could be summed.
/// Merging copies the adapter's weights into the base layer (the originals are kept to unmerge).
/// </summary>
public sealed class LnTuningLayer : Module<Tensor, Tensor>, ITunerLayer
{
    readonly AdapterBook<NoSettings> book;

    Module<Tensor, Tensor> base_layer;
    AdapterDict<Module<Tensor, Tensor>> ln_tuning_layers = new();

    public LnTuningLayer(Module<Tensor, Tensor> baseLayer) : base("LnTuningLayer")
    {
        if (baseLayer is not (LayerNorm { weight: not null } or RmsNorm or GemmaRmsNorm))
            throw new NotSupportedException($"LN tuning wraps LayerNorm (with weights) or RMSNorm layers, not {baseLayer.GetType().Name}");
        base_layer = baseLayer;
        book = new AdapterBook<NoSettings>(baseLayer);
        RegisterComponents();
    }

    public Module BaseLayer => base_layer;
    public IAdapterBook Book => book;
    public bool CanMerge => true;

    public void AddAdapter(string name)
    {
        book.CheckNew(name);
        ln_tuning_layers.Add(name, CopyOf(base_layer));
        book.Add(name, default);
    }

    public override Tensor forward(Tensor x)
    {
        if (book.RunsBaseOnly) return base_layer.call(x);
        var active = book.ActiveAdapters.Select(a => a.Name).ToList();
        if (active.Count > 1)
            throw new InvalidOperationException($"LN tuning uses one adapter at a time (each holds a whole copy of the layer); active: {string.Join(", ", active)}");
        return ln_tuning_layers[active[0]].call(x);
    }

    public IEnumerable<(string Key, Tensor Value)> StateDict(string adapter) =>
        ln_tuning_layers[adapter].named_parameters().Select(p => ("ln_tuning_layers." + p.name, (Tensor)p.parameter));

    public IEnumerable<Parameter> AdapterParameters(string adapter) => ln_tuning_layers[adapter].parameters();

    public string Describe(string adapter) => $"a copy of the {base_layer.GetType().Name}";

    /// <summary>Copies the adapter's weights into the base layer (one adapter at a time).</summary>
    public void MergeInPlace(IReadOnlyList<string> adapters, bool safe)
    {
        if (adapters.Count == 0) return;
        if (adapters.Count > 1) throw new InvalidOperationException($"LN tuning merges one adapter at a time; asked for {string.Join(", ", adapters)}");
        if (book.IsMerged) book.Unmerge();
        var copy = ln_tuning_layers[adapters[0]].named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter);
        book.Write(adapters[0], base_layer.named_parameters().Select(p => (p.parameter, copy[p.name])).ToList(), safe);
    }

    public void RemoveTensors(string adapter) => ln_tuning_layers.Remove(adapter);

    // A trainable copy with the same shape, eps and dtype (PEFT deep-copies the module).
    static Module<Tensor, Tensor> CopyOf(Module<Tensor, Tensor> m)
    {
        using var _ = no_grad();
        Module<Tensor, Tensor> copy = m switch
        {
            LayerNorm n => nn.LayerNorm(n.normalized_shape, n.eps, n.elementwise_affine, n.bias is not null, n.weight!.device, n.weight.dtype),
            RmsNorm r => new RmsNorm(r.weight.shape[0], r.Eps, r.weight.dtype).to(r.weight.device),
            GemmaRmsNorm g => new GemmaRmsNorm(g.weight.shape[0], g.Eps, g.weight.dtype).to(g.weight.device),
            _ => throw new NotSupportedException($"LN tuning cannot copy a {m.GetType().Name}"),
        };
        var source = m.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, p) in copy.named_parameters())
        {
            p.copy_(source[name]);
            p.requires_grad = true;
        }
        return copy;
    }
}
