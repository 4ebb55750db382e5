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
    readonly AdapterBook<NoSettings> book;

    Module<Tensor, Tensor> base_layer;
    ParameterDict bitfit_bias = new();

    public BitFitLayer(Module<Tensor, Tensor> baseLayer) : base("BitFitLayer")
    {
        if (BiasOf(baseLayer) is null) throw new NotSupportedException($"BitFit needs a layer with a bias; {baseLayer.GetType().Name} has none");
        base_layer = baseLayer;
        book = new AdapterBook<NoSettings>(baseLayer);
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
    public IAdapterBook Book => book;
    public bool CanMerge => true;

    public void AddAdapter(string name)
    {
        book.CheckNew(name);
        using var _ = no_grad();
        bitfit_bias.Add(name, new Parameter(BaseBias.detach().to(ScalarType.Float32).clone()));
        book.Add(name, default);
    }

    public override Tensor forward(Tensor x)
    {
        if (book.RunsBaseOnly) return base_layer.call(x);
        using var scope = NewDisposeScope();
        var y = base_layer.call(x);
        foreach (var (a, _) in book.ActiveAdapters) y = y + (bitfit_bias[a] - BaseBias.to(ScalarType.Float32)).to(y.dtype);
        return y.MoveToOuterDisposeScope();
    }

    public IEnumerable<(string Key, Tensor Value)> StateDict(string adapter)
    {
        yield return ("bitfit_bias", bitfit_bias[adapter]);
    }

    public string Describe(string adapter) => $"bias of {BaseBias.shape[0]}";

    /// <summary>b = b0 + sum over adapters of (b_a - b0); one adapter: its bias.</summary>
    public void MergeInPlace(IReadOnlyList<string> adapters, bool safe)
    {
        using var _ = no_grad();
        var bias = BaseBias;
        foreach (var a in book.ToMerge(adapters).ToList())
        {
            using var scope = NewDisposeScope();
            var b0 = book.Original(bias).to(ScalarType.Float32);
            book.Write(a, [(bias, bias.to(ScalarType.Float32) + (bitfit_bias[a] - b0))], safe);
        }
    }

    public void RemoveTensors(string adapter) => bitfit_bias.Remove(adapter);
}
