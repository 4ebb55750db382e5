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
    readonly List<string> merged = new();
    readonly List<(Parameter Target, Tensor Original)> originals = new();

    Module<Tensor, Tensor> base_layer;
    AdapterDict<Module<Tensor, Tensor>> ln_tuning_layers = new();

    public LnTuningLayer(Module<Tensor, Tensor> baseLayer) : base("LnTuningLayer")
    {
        if (baseLayer is not (LayerNorm { weight: not null } or RmsNorm or GemmaRmsNorm))
            throw new NotSupportedException($"LN tuning wraps LayerNorm (with weights) or RMSNorm layers, not {baseLayer.GetType().Name}");
        base_layer = baseLayer;
        RegisterComponents();
    }

    public Module BaseLayer => base_layer;
    public IReadOnlyCollection<string> AdapterNames => ln_tuning_layers.Keys.ToList();
    public IReadOnlyList<string> ActiveAdapters { get; set; } = [];
    public bool Disabled { get; set; }
    public IReadOnlyList<string> MergedAdapters => merged;
    public bool CanMerge => true;

    public void AddAdapter(string name)
    {
        if (ln_tuning_layers.ContainsKey(name)) throw new ArgumentException($"adapter '{name}' already exists on this layer");
        ln_tuning_layers.Add(name, CopyOf(base_layer));
    }

    public override Tensor forward(Tensor x)
    {
        if (Disabled && merged.Count > 0) UnmergeInPlace();
        if (Disabled || merged.Count > 0 || ActiveAdapters.Count == 0) return base_layer.call(x);
        if (ActiveAdapters.Count > 1)
            throw new InvalidOperationException($"LN tuning uses one adapter at a time (each holds a whole copy of the layer); active: {string.Join(", ", ActiveAdapters)}");
        return ln_tuning_layers[ActiveAdapters[0]].call(x);
    }

    public IEnumerable<(string Key, Tensor Value)> StateDict(string adapter) =>
        ln_tuning_layers[adapter].named_parameters().Select(p => ("ln_tuning_layers." + p.name, (Tensor)p.parameter));

    public void LoadStateDict(string adapter, IReadOnlyDictionary<string, Tensor> tensors, string modulePath, string source) =>
        AdapterTensors.Load(StateDict(adapter), tensors, adapter, modulePath, source);

    public IEnumerable<Parameter> AdapterParameters(string adapter) => ln_tuning_layers[adapter].parameters();

    public void MergeInPlace(IReadOnlyList<string> adapters, bool safe)
    {
        if (adapters.Count == 0) return;
        if (adapters.Count > 1) throw new InvalidOperationException($"LN tuning merges one adapter at a time; asked for {string.Join(", ", adapters)}");
        if (merged.Count > 0) UnmergeInPlace();
        using var _ = no_grad();
        var copy = ln_tuning_layers[adapters[0]].named_parameters().ToDictionary(p => p.name, p => p.parameter);
        if (safe && copy.Values.Any(p => !isfinite(p).all().item<bool>()))
            throw new InvalidOperationException($"adapter '{adapters[0]}' has NaN or inf weights; it was not merged");
        foreach (var (name, p) in base_layer.named_parameters())
        {
            originals.Add((p, p.detach().clone().DetachFromDisposeScope()));
            p.copy_(copy[name]);
        }
        merged.Add(adapters[0]);
    }

    public void UnmergeInPlace()
    {
        using var _ = no_grad();
        foreach (var (p, original) in originals) { p.copy_(original); original.Dispose(); }
        originals.Clear();
        merged.Clear();
    }

    public void DeleteAdapter(string adapter)
    {
        if (merged.Contains(adapter)) throw new InvalidOperationException($"adapter '{adapter}' is merged; unmerge it before deleting");
        ln_tuning_layers.Remove(adapter);
        ActiveAdapters = ActiveAdapters.Where(a => a != adapter).ToList();
    }

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
