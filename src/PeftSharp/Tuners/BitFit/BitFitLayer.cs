using PeftSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace PeftSharp.Tuners.BitFit;

/// <summary>
/// Wraps a Linear, Conv1D or LayerNorm (<c>base_layer</c>) whose bias b0 is added last, and swaps in each active
/// adapter's trained bias: y = base(x) + (b_a - b0). Merging writes the adapters' biases into the base (kept to unmerge).
/// </summary>
public sealed class BitFitLayer : Module<Tensor, Tensor>, ITunerLayer
{
    readonly List<string> merged = new();
    Tensor? original;

    Module<Tensor, Tensor> base_layer;
    ParameterDict bitfit_bias = new();

    public BitFitLayer(Module<Tensor, Tensor> baseLayer) : base("BitFitLayer")
    {
        if (BiasOf(baseLayer) is null) throw new NotSupportedException($"BitFit needs a layer with a bias; {baseLayer.GetType().Name} has none");
        base_layer = baseLayer;
        RegisterComponents();
    }

    /// <summary>The bias BitFit can train in <paramref name="m"/>: a Linear, Conv1D or LayerNorm's own bias, if it has one.</summary>
    public static Parameter? BiasOf(Module m) => m switch
    {
        Linear l => l.bias,
        Conv1D c => c.bias,
        LayerNorm n => n.bias,
        _ => null,
    };

    Parameter BaseBias => BiasOf(base_layer)!;

    public Module BaseLayer => base_layer;
    public IReadOnlyCollection<string> AdapterNames => bitfit_bias.Keys.ToList();
    public IReadOnlyList<string> ActiveAdapters { get; set; } = [];
    public bool Disabled { get; set; }
    public IReadOnlyList<string> MergedAdapters => merged;
    public bool CanMerge => true;

    public void AddAdapter(string name)
    {
        if (bitfit_bias.ContainsKey(name)) throw new ArgumentException($"adapter '{name}' already exists on this layer");
        using var _ = no_grad();
        bitfit_bias.Add(name, new Parameter(BaseBias.detach().to(ScalarType.Float32).clone()));
    }

    public override Tensor forward(Tensor x)
    {
        if (Disabled && merged.Count > 0) UnmergeInPlace();
        if (Disabled || merged.Count > 0 || ActiveAdapters.Count == 0) return base_layer.call(x);
        using var scope = NewDisposeScope();
        var y = base_layer.call(x);
        foreach (var a in ActiveAdapters) y = y + (bitfit_bias[a] - BaseBias.to(ScalarType.Float32)).to(y.dtype);
        return y.MoveToOuterDisposeScope();
    }

    public IEnumerable<(string Key, Tensor Value)> StateDict(string adapter)
    {
        yield return ("bitfit_bias", bitfit_bias[adapter]);
    }

    public void LoadStateDict(string adapter, IReadOnlyDictionary<string, Tensor> tensors, string modulePath, string source) =>
        AdapterTensors.Load(StateDict(adapter), tensors, adapter, modulePath, source);

    public IEnumerable<Parameter> AdapterParameters(string adapter) => [bitfit_bias[adapter]];

    /// <summary>b = b0 + sum over adapters of (b_a - b0); one adapter: its bias.</summary>
    public void MergeInPlace(IReadOnlyList<string> adapters, bool safe)
    {
        using var _ = no_grad();
        var bias = BaseBias;
        foreach (var a in adapters)
        {
            if (merged.Contains(a)) continue;
            using var scope = NewDisposeScope();
            var b0 = original ?? bias.detach().to(ScalarType.Float32);
            var newBias = bias.to(ScalarType.Float32) + (bitfit_bias[a] - b0);
            if (safe && !isfinite(newBias).all().item<bool>())
                throw new InvalidOperationException($"merging BitFit adapter '{a}' would put NaN or inf into the bias; it was not merged");
            original ??= bias.detach().to(ScalarType.Float32).clone().DetachFromDisposeScope();
            bias.copy_(newBias);
            merged.Add(a);
        }
    }

    public void UnmergeInPlace()
    {
        if (original is null) return;
        using var _ = no_grad();
        BaseBias.copy_(original);
        original.Dispose();
        original = null;
        merged.Clear();
    }

    public void DeleteAdapter(string adapter)
    {
        if (merged.Contains(adapter)) throw new InvalidOperationException($"adapter '{adapter}' is merged; unmerge it before deleting");
        bitfit_bias.Remove(adapter);
        ActiveAdapters = ActiveAdapters.Where(a => a != adapter).ToList();
    }
}
