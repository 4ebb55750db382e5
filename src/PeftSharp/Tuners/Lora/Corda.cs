using PeftSharp.Peft;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Lora;

/// <summary>PEFT's <c>corda_config</c>. The cache and covariance files are PEFT's disk caches; PeftSharp recomputes instead.</summary>
public sealed record CordaConfig
{
    public string? CacheFile { get; init; }
    public string? CovarianceFile { get; init; }
    /// <summary>"ipm" (instruction-previewed: the adapter takes the largest components of W C) or "kpm" (knowledge-preserved: the smallest).</summary>
    public string CordaMethod { get; init; } = "ipm";
    public bool Verbose { get; init; }
    public bool UseFloat16ForCovariance { get; init; }
    public bool PruneTemporaryFields { get; init; } = true;
}

/// <summary>
/// CorDA, context-oriented decomposition adaptation (Yang et al., 2024, https://arxiv.org/abs/2406.05223): with C the
/// covariance of a layer's inputs over the calibration batches, W C = U S V^T, and the adapter takes r components
/// mapped back through C^-1: B = U_r sqrt(S_r / s), A = sqrt(S_r / s) V_r^T C^-1, the base keeping W - s B A. IPM takes
/// the largest r, KPM the smallest (the directions the data uses least, preserving what the model knows). As PEFT's
/// <c>preprocess_corda</c> and <c>corda_init</c>: each sequence's inputs X [T, in] are divided by |max X| and X^T X summed,
/// then averaged over sequences (PEFT's hook takes one sequence per forward; a micro-batch of n rows counts as n such
/// forwards, so the result does not depend on the micro-batch size, and a padded row counts its real tokens only, as the
/// sequence run alone would); C is damped by (0.01 mean diag C) I, the damping
/// doubled until C C^-1 is within 0.05 of I.
/// </summary>
internal static class Corda
{
    public static void Calibrate(PeftModel model, string adapter, LoraConfig c, CalibrationData data)
    {
        var method = (c.CordaConfig ?? new CordaConfig()).CordaMethod;
        if (method is not ("ipm" or "kpm")) throw new ArgumentException($"corda_config.corda_method is '{method}'; it must be ipm or kpm");
        var layers = ResidualInit.LinearLayers(model, adapter, "CorDA");
        var covariance = new Dictionary<string, Tensor>();
        var sequences = new Dictionary<string, long>();
        bool training = model.Base.training;
        model.Base.eval();
        try
        {
            using (model.DisableAdapters())
            using (no_grad())
            {
                Tensor? realTokens = null;
                foreach (var (path, layer) in layers) layer.InputTap = x => Accumulate(covariance, sequences, path, x, realTokens);
                try
                {
                    foreach (var batch in data.Batches)
                    {
                        using var scope = NewDisposeScope();
                        realTokens = batch.Tokens < batch.InputIds.numel() ? batch.AttentionMask : null;
                        data.Loss(batch);
                    }
                }
                finally { foreach (var (_, layer) in layers) layer.InputTap = null; }
            }
            foreach (var (path, layer) in layers)
            {
                using var scope = NewDisposeScope();
                var cov = covariance.GetValueOrDefault(path) ?? throw new InvalidOperationException($"CorDA: layer '{path}' saw no input in the calibration batches");
                Initialise(layer, adapter, cov / sequences[path], method == "kpm", path);
            }
        }
        finally
        {
            foreach (var t in covariance.Values) t.Dispose();
            model.Base.train(training);
        }
    }

    /// <param name="realTokens">[n, T] attention mask of a padded micro-batch (null: every token is real).</param>
    static void Accumulate(Dictionary<string, Tensor> covariance, Dictionary<string, long> sequences, string path, Tensor x, Tensor? realTokens)
    {
        using var scope = NewDisposeScope();
        var rows = x.detach().reshape(x.dim() > 2 ? x.shape[0] : 1, -1, x.shape[^1]).to(ScalarType.Float32); // [n, T, in]
        var padding = realTokens is not null && realTokens.shape.SequenceEqual(rows.shape[..2])
            ? realTokens.to(rows.device).eq(0).unsqueeze(-1) : null;                                            // [n, T, 1]
        var max = (padding is null ? rows : rows.masked_fill(padding, float.NegativeInfinity)).amax([1, 2], keepdim: true);
        if (!(rows.isfinite().all().item<bool>() && max.isfinite().all().item<bool>() && max.ne(0).all().item<bool>()))
            throw new InvalidOperationException($"CorDA: the inputs of '{path}' are not finite (or all zero) on a calibration batch");
        var scaled = rows / max.abs();                                                                         // each sequence by its own max
        if (padding is not null) scaled = scaled.masked_fill(padding, 0);
        var flat = scaled.reshape(-1, x.shape[^1]);
        var sum = flat.t().matmul(flat);
        if (covariance.Remove(path, out var old)) { sum = sum + old; old.Dispose(); }
        covariance[path] = sum.DetachFromDisposeScope();
        sequences[path] = sequences.GetValueOrDefault(path) + rows.shape[0];
    }

    /// <summary>Sets the adapter from W and the input covariance <paramref name="cov"/> [in, in], the base to the residual.</summary>
    internal static void Initialise(LoraLayer layer, string a, Tensor cov, bool kpm, string path)
    {
        using var scope = NewDisposeScope();
        int r = layer.Rank(a);
        double s = layer.Scaling(a);
        var w = BaseLayers.WeightOutIn(layer.Base).to(ScalarType.Float32);
        var (damped, inverse) = DampedInverse(cov, path);
        var (u, sv, vh) = linalg.svd(w.matmul(damped), fullMatrices: false);
        if (r > sv.shape[0]) throw new ArgumentException($"CorDA: rank {r} of '{path}' exceeds min(in, out) = {sv.shape[0]}");
        var v = vh.matmul(inverse).t();                      // [in, k]: right singular vectors mapped back through C^-1
        var pick = kpm ? TensorIndex.Slice(sv.shape[0] - r, null) : TensorIndex.Slice(0, r);
        var sr = sv[pick] / s;
        var loraA = v[.., pick].t() * sr.sqrt().view(-1, 1);  // [r, in]
        var loraB = u[.., pick] * sr.sqrt();                  // [out, r]
        ResidualInit.Apply(layer, a, loraA, loraB);
    }

    static (Tensor Damped, Tensor Inverse) DampedInverse(Tensor cov, string path)
    {
        var identity = eye(cov.shape[0], dtype: cov.dtype, device: cov.device);
        var meanDiagonal = cov.diagonal().mean();
        double damp = 0.01;
        for (int i = 0; i < 40; i++, damp *= 2)
        {
            var damped = cov + identity * meanDiagonal * damp;
            var inverse = linalg.inv(damped);
            if ((damped.matmul(inverse) - identity).norm().item<float>() < 0.05) return (damped, inverse);
        }
        throw new InvalidOperationException($"CorDA: the input covariance of '{path}' cannot be inverted even damped; give more or more varied calibration batches");
    }
}
