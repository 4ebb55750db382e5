using PeftSharp.IO;
using PeftSharp.Merging;
using static TorchSharp.torch;

namespace PeftSharp.Analysis;

/// <summary>
/// Compares fine-tuned weights with their base, matrix by matrix: singular spectra of W0 and W0 + dW, the effective
/// rank of dW and the intruder dimensions of W0 + dW (<see cref="Spectra"/>). Matrices are read in their stored layout,
/// as PEFT's <c>reduce_intruder_dimension</c> reads <c>base_layer.weight</c>.
/// </summary>
public static class IntruderAnalysis
{
    /// <summary>One matrix: <paramref name="baseWeight"/> W0 and <paramref name="delta"/> dW, both [rows, cols].</summary>
    public static LayerReport Compare(string module, Tensor baseWeight, Tensor delta, IntruderOptions options)
    {
        using var scope = NewDisposeScope();
        var w0 = baseWeight.to(ScalarType.Float32);
        var dw = delta.to(ScalarType.Float32);
        var scan = Spectra.Intruders(w0, w0 + dw, options.TopK, options.Epsilon);
        var s = linalg.svdvals(dw);
        return new LayerReport(module, w0.shape[0], w0.shape[1], scan, s.data<float>().ToArray(), Spectra.EffectiveRank(s));
    }

    /// <summary>Every module a LoRA adapter targets, against the base model in <paramref name="modelDir"/>.</summary>
    public static List<LayerReport> AnalyzeAdapter(string modelDir, string adapterDir, IntruderOptions options)
    {
        options.Validate();
        using var ckpt = Checkpoint.Open(modelDir);
        using var adapter = AdapterDelta.Open(adapterDir);
        var reports = new List<LayerReport>();
        foreach (var module in InLayerOrder(adapter.LoraModules))
        {
            using var scope = NewDisposeScope();
            var name = module + ".weight";
            if (!ckpt.Contains(name))
                throw new MergeException($"adapter {adapterDir}: targets '{module}', but {modelDir} has no tensor '{name}': is this adapter for another model?");
            var w0 = ckpt.Load(name);
            reports.Add(Compare(module, w0, adapter.Delta(name, w0)!, options));
        }
        return reports;
    }

    /// <summary>Every 2-D floating-point weight that differs between a fully fine-tuned model and its base.</summary>
    public static List<LayerReport> AnalyzeTuned(string modelDir, string tunedDir, IntruderOptions options)
    {
        options.Validate();
        using var baseCkpt = Checkpoint.Open(modelDir);
        using var tunedCkpt = Checkpoint.Open(tunedDir);
        var reports = new List<LayerReport>();
        foreach (var name in InLayerOrder(tunedCkpt.Names))
        {
            var info = tunedCkpt.Info(name);
            if (info.Shape.Length != 2 || !IsFloat(info.DType) || !baseCkpt.Contains(name)) continue;
            var baseInfo = baseCkpt.Info(name);
            if (!baseInfo.Shape.SequenceEqual(info.Shape))
                throw new MergeException($"{tunedDir}: tensor '{name}' is [{string.Join(",", info.Shape)}] but [{string.Join(",", baseInfo.Shape)}] in {modelDir}: " +
                    "--tuned must be a fine-tune of --model");
            using var scope = NewDisposeScope();
            var w0 = baseCkpt.Load(name).to(ScalarType.Float32);
            var w1 = tunedCkpt.Load(name).to(ScalarType.Float32);
            if (w0.eq(w1).all().item<bool>()) continue;
            var module = name.EndsWith(".weight", StringComparison.Ordinal) ? name[..^".weight".Length] : name;
            reports.Add(Compare(module, w0, w1 - w0, options));
        }
        return reports;
    }

    static bool IsFloat(ScalarType t) => t is ScalarType.Float32 or ScalarType.Float16 or ScalarType.BFloat16 or ScalarType.Float64;

    // layers.2 before layers.10; names outside the layers first.
    internal static IEnumerable<string> InLayerOrder(IEnumerable<string> names) =>
        names.OrderBy(n => LayerDepth.LayerIndex(n) ?? -1).ThenBy(n => n, StringComparer.Ordinal);
}
