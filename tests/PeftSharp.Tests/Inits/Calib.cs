using PeftSharp.Data;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tuners;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Inits;

/// <summary>Calibration batches and the measurements the data-aware init tests share.</summary>
internal static class Calib
{
    public static PretrainedModel TinyLlama() => AutoModel.Load(Repo.Fixture("models", "tiny-llama"));

    /// <summary><paramref name="count"/> batches of random token rows [rows, length] (ids 2.., no padding), in a fixed order.</summary>
    public static List<Batch> Batches(int count, int rows = 4, int length = 16, long seed = 11)
    {
        var ids = randint(2, 512, [count * rows, length], generator: new Generator((ulong)seed));
        var source = BatchSource.FromInputIds(ids);
        var order = Enumerable.Range(0, source.Count).ToArray();
        return Enumerable.Range(0, count).Select(i => source.MicroBatch(order, i, rows)).ToList();
    }

    public static Tensor Logits(ILanguageModel m, List<Batch> batches)
    {
        using var _ = no_grad();
        return m.Forward(ModelInputs.Ids(batches[0].InputIds));
    }

    public static Dictionary<string, LoraLayer> Layers(PeftModel pm) =>
        pm.TunerLayers().Where(x => x.Layer is LoraLayer).ToDictionary(x => x.Path, x => (LoraLayer)x.Layer);

    /// <summary>Every input row each layer sees over the batches (adapters off), as [tokens, in] float64.</summary>
    public static Dictionary<string, Tensor> Inputs(PeftModel pm, List<Batch> batches)
    {
        var seen = Layers(pm).ToDictionary(kv => kv.Key, _ => new List<Tensor>());
        var layers = Layers(pm);
        foreach (var (path, layer) in layers) layer.InputTap += x => seen[path].Add(x.detach().reshape(-1, x.shape[^1]).to(ScalarType.Float64).clone().DetachFromDisposeScope());
        try
        {
            using var disabled = pm.DisableAdapters();
            using var _ = no_grad();
            foreach (var b in batches) pm.Forward(ModelInputs.Ids(b.InputIds)).Dispose();
        }
        finally { foreach (var l in layers.Values) l.InputTap = null; }
        return seen.ToDictionary(kv => kv.Key, kv => cat(kv.Value, 0));
    }

    /// <summary>The largest principal angle (radians) between the row spaces of <paramref name="a"/> and <paramref name="b"/>.</summary>
    public static double MaxPrincipalAngle(Tensor a, Tensor b)
    {
        using var scope = NewDisposeScope();
        var qa = linalg.qr(a.to(ScalarType.Float64).t()).Q;
        var qb = linalg.qr(b.to(ScalarType.Float64).t()).Q;
        var cosines = linalg.svdvals(qa.t().matmul(qb)).clamp(-1, 1);
        return Math.Acos(cosines.min().item<double>());
    }

    /// <summary>Cosine similarity of two tensors seen as flat vectors.</summary>
    public static double Cosine(Tensor a, Tensor b)
    {
        using var scope = NewDisposeScope();
        var x = a.reshape(-1).to(ScalarType.Float64);
        var y = b.reshape(-1).to(ScalarType.Float64);
        return (x.dot(y) / (x.norm() * y.norm())).item<double>();
    }
}
