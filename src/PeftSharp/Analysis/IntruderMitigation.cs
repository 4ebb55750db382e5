using PeftSharp.IO;
using PeftSharp.Merging;
using static TorchSharp.torch;

namespace PeftSharp.Analysis;

/// <summary>
/// PEFT's <c>reduce_intruder_dimension</c>: scale the intruder components of W0 + dW by <c>lambda</c>,
/// <c>W' = W0 + dW + (lambda - 1) * sum_{i in intruders} s_i u_i v_iᵀ</c>, and re-factor <c>(W' - W0) / scaling</c> at the
/// adapter's rank by truncated SVD, splitting <c>sqrt(S)</c> evenly between B and A. Modules without intruders keep
/// their factors unchanged.
/// </summary>
public static class IntruderMitigation
{
    /// <summary>PEFT's default <c>mitigation_lambda</c>.</summary>
    public const double DefaultLambda = 0.75;

    /// <summary>
    /// New factors for one module, or null when it has no intruders. <paramref name="baseWeight"/> and
    /// <paramref name="delta"/> are in the stored layout; <paramref name="transposed"/> says the LoRA factors multiply to
    /// the transpose of that layout (fan_in_fan_out layers, embeddings), so <c>A</c> is [rank, in] and <c>B</c> [out, rank]
    /// as PEFT stores them and <c>scaling * B @ A</c> is the best rank-<paramref name="rank"/> approximation of the
    /// mitigated delta.
    /// </summary>
    public static (Tensor A, Tensor B, int[] Intruders)? Reduce(Tensor baseWeight, Tensor delta, double scaling, int rank, bool transposed,
        IntruderOptions options, double lambda)
    {
        using var scope = NewDisposeScope();
        var w0 = baseWeight.to(ScalarType.Float32);
        var merged = w0 + delta.to(ScalarType.Float32);
        var scan = Spectra.Intruders(w0, merged, options.TopK, options.Epsilon);
        if (scan.Intruders.Length == 0) return null;

        var (u, s, vh) = linalg.svd(merged, fullMatrices: false);             // u [rows, k], s [k], vh [k, cols]
        var idx = tensor(scan.Intruders.Select(i => (long)i).ToArray());
        var intruder = (u.index_select(1, idx) * s.index_select(0, idx)).matmul(vh.index_select(0, idx));
        var mitigated = (merged + (lambda - 1) * intruder - w0) / scaling;
        if (transposed) mitigated = mitigated.t();                          // now [out, in]

        var (ud, sd, vhd) = linalg.svd(mitigated, fullMatrices: false);
        long k = Math.Min(rank, sd.shape[0]);
        var root = sd.narrow(0, 0, k).sqrt();
        var b = zeros(mitigated.shape[0], rank);
        var a = zeros(rank, mitigated.shape[1]);
        b.narrow(1, 0, k).copy_(ud.narrow(1, 0, k) * root);
        a.narrow(0, 0, k).copy_(root.unsqueeze(1) * vhd.narrow(0, 0, k));
        return (a.MoveToOuterDisposeScope(), b.MoveToOuterDisposeScope(), scan.Intruders);
    }

    /// <summary>
    /// Writes to <paramref name="outDir"/> a copy of the adapter in <paramref name="adapterDir"/> (same adapter_config.json)
    /// whose LoRA factors are mitigated module by module; returns each module's intruder count.
    /// </summary>
    public static List<(string Module, int Intruders)> WriteReduced(string modelDir, string adapterDir, string outDir,
        IntruderOptions options, double lambda = DefaultLambda)
    {
        options.Validate();
        if (!double.IsFinite(lambda)) throw new ArgumentException($"--reduce-intruders {lambda}: give a finite number such as {DefaultLambda}");
        using var ckpt = Checkpoint.Open(modelDir);
        using var adapter = AdapterDelta.Open(adapterDir);
        using var file = SafetensorsFile.Open(Path.Combine(adapterDir, AdapterDelta.WeightsFile));
        using var scope = NewDisposeScope();
        var tensors = file.Names.ToDictionary(n => n, file.Load);
        var summary = new List<(string, int)>();
        foreach (var module in IntruderAnalysis.InLayerOrder(adapter.LoraModules))
        {
            var name = module + ".weight";
            if (!ckpt.Contains(name))
                throw new MergeException($"adapter {adapterDir}: targets '{module}', but {modelDir} has no tensor '{name}': is this adapter for another model?");
            var (keyA, keyB, embedding, scaling) = adapter.LoraFactors(name)!.Value;
            var w0 = ckpt.Load(name);
            var reduced = Reduce(w0, adapter.Delta(name, w0)!, scaling, (int)tensors[keyA].shape[0], embedding || adapter.FanInFanOut, options, lambda);
            summary.Add((module, reduced?.Intruders.Length ?? 0));
            if (reduced is not { } r) continue;
            tensors[keyA] = r.A.to(tensors[keyA].dtype);
            tensors[keyB] = r.B.to(tensors[keyB].dtype);
        }
        Directory.CreateDirectory(outDir);
        SafetensorsWriter.Save(Path.Combine(outDir, AdapterDelta.WeightsFile), tensors, file.Metadata);
        AtomicFile.WriteAllText(Path.Combine(outDir, AdapterDelta.ConfigFile), File.ReadAllText(Path.Combine(adapterDir, AdapterDelta.ConfigFile)));
        return summary;
    }
}
