using PeftSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Module = TorchSharp.torch.nn.Module;
using Linear = TorchSharp.Modules.Linear;
using Embedding = TorchSharp.Modules.Embedding;

namespace PeftSharp.Tuners;

public enum BaseKind { Linear, Conv1D, Embedding, Other }

/// <summary>Uniform access to the weight of the layer types adapters wrap.</summary>
public static class BaseLayers
{
    public static BaseKind KindOf(Module m) => m switch
    {
        Linear => BaseKind.Linear,
        Conv1D => BaseKind.Conv1D,
        Embedding => BaseKind.Embedding,
        _ => BaseKind.Other,
    };

    /// <summary>Linear-like layers: what "all-linear" targets.</summary>
    public static bool IsLinear(Module m) => m is Linear or Conv1D;

    public static Parameter Weight(Module m) => m switch
    {
        Linear l => l.weight!,
        Conv1D c => c.weight,
        Embedding e => e.weight!,
        _ => throw new NotSupportedException($"{m.GetType().Name} is not a layer type adapters can wrap (Linear, Conv1D, Embedding)"),
    };

    public static Parameter? Bias(Module m) => m switch
    {
        Linear l => l.bias,
        Conv1D c => c.bias,
        _ => null,
    };

    /// <summary>(in, out) features; for embeddings (num_embeddings, embedding_dim).</summary>
    public static (long In, long Out) Features(Module m) => m switch
    {
        Linear l => (l.in_features, l.out_features),
        Conv1D c => (c.InFeatures, c.OutFeatures),
        Embedding e => (e.weight!.shape[0], e.weight!.shape[1]),
        _ => throw new NotSupportedException($"{m.GetType().Name} is not a layer type adapters can wrap"),
    };

    /// <summary>The weight as [out, in] whatever the storage (GPT-2's Conv1D stores [in, out]).</summary>
    /// <summary>
    /// In and out features of a layer that must be a Linear (LoHa, LoKr, MiSS, as in PEFT) or, with
    /// <paramref name="conv1D"/>, a Linear or GPT-2 Conv1D ((IA)^3, AdaLoRA, VeRA); anything else is refused naming
    /// <paramref name="method"/>.
    /// </summary>
    public static (long In, long Out) LinearFeatures(Module m, string method, bool conv1D = false)
    {
        var kind = KindOf(m);
        if (kind == BaseKind.Linear || (conv1D && kind == BaseKind.Conv1D)) return Features(m);
        throw new NotSupportedException(conv1D
            ? $"{method} wraps Linear and Conv1D layers, not {m.GetType().Name}"
            : $"{method} wraps Linear layers (as PEFT does), not {m.GetType().Name}");
    }

    public static Tensor WeightOutIn(Module m) => m is Conv1D c ? c.weight.t() : Weight(m);

    /// <summary>A delta given as [out, in] in the layer's storage layout.</summary>
    public static Tensor ToStorage(Module m, Tensor deltaOutIn) => m is Conv1D ? deltaOutIn.t() : deltaOutIn;
}
