using PeftSharp.Peft;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Lora;

/// <summary>PEFT's <c>lora_ga_config</c> (LoRA-GA's settings).</summary>
public sealed record LoraGaConfig
{
    /// <summary>Which of the gradient's top 2r singular directions go to A and B: ArB2r (A the first r, B the next r), A2rBr, ArBr (alternating) or random.</summary>
    public string Direction { get; init; } = "ArB2r";
    /// <summary>stable (B times out^(1/4) / sqrt(stable_gamma)), weight_svd, gd_scale (both divided by the LoRA scaling) or unit.</summary>
    public string Scale { get; init; } = "stable";
    public double StableGamma { get; init; } = 16;
}

/// <summary>
/// LoRA-GA, gradient approximation (Wang et al., 2024, https://arxiv.org/abs/2407.05000): G = the mean gradient of the
/// loss with respect to each target weight over the calibration batches; G = U S V^T; A and B take disjoint slices of
/// the top 2r singular directions (default ArB2r: A = V_r^T, B = U_{r:2r} S_{r:2r}, scaled), so that the first steps
/// of B A follow full fine-tuning's gradient; the base keeps W - s B A. As PEFT's <c>preprocess_loraga</c> and
/// <c>lora_ga_init</c> (the gradient in training mode, averaged over backward passes), with an exact SVD where PEFT
/// uses a randomised one.
/// </summary>
internal static class LoraGa
{
    public static void Calibrate(PeftModel model, string adapter, LoraConfig c, CalibrationData data)
    {
        var ga = c.LoraGaConfig ?? new LoraGaConfig();
        if (ga.Direction is not ("ArBr" or "A2rBr" or "ArB2r" or "random"))
            throw new ArgumentException($"lora_ga_config.direction is '{ga.Direction}'; it must be ArBr, A2rBr, ArB2r or random");
        if (ga.Scale is not ("stable" or "weight_svd" or "gd_scale" or "unit"))
            throw new ArgumentException($"lora_ga_config.scale is '{ga.Scale}'; it must be stable, weight_svd, gd_scale or unit");
        var layers = ResidualInit.LinearLayers(model, adapter, "LoRA-GA");
        var gradients = Gradients(model, layers, data);
        try
        {
            foreach (var (path, layer) in layers)
            {
                using var scope = NewDisposeScope();
                Initialise(layer, adapter, gradients[path], ga, path);
            }
        }
        finally { foreach (var g in gradients.Values) g.Dispose(); }
    }

    /// <summary>Mean gradient of the loss over the batches for each layer's base weight, as [out, in] float32; only those weights get gradients.</summary>
    internal static Dictionary<string, Tensor> Gradients(PeftModel model, List<(string Path, LoraLayer Layer)> layers, CalibrationData data)
    {
        bool training = model.Base.training;
        var weights = layers.Select(x => BaseLayers.Weight(x.Layer.Base)).ToList();
        var wasTrainable = weights.Select(w => w.requires_grad).ToList();
        var others = model.Base.parameters().Where(p => p.requires_grad).ToList();
        try
        {
            model.Base.train();
            foreach (var p in others) p.requires_grad = false;
            foreach (var w in weights) w.requires_grad = true;
            using (model.DisableAdapters())
                foreach (var batch in data.Batches)
                {
                    using var scope = NewDisposeScope();
                    data.Loss(batch).backward();
                }
            var result = new Dictionary<string, Tensor>();
            foreach (var ((path, layer), w) in layers.Zip(weights))
            {
                var g = w.grad ?? throw new InvalidOperationException($"LoRA-GA: '{path}' got no gradient from the calibration batches (is it used by the loss?)");
                var outIn = layer.Kind == BaseKind.Conv1D ? g.t() : g;
                result[path] = (outIn.to(ScalarType.Float32) / data.Batches.Count).DetachFromDisposeScope();
            }
            return result;
        }
        finally
        {
            foreach (var (w, was) in weights.Zip(wasTrainable)) { w.requires_grad = was; w.grad?.Dispose(); w.grad = null; }
            foreach (var p in others) p.requires_grad = true;
            model.Base.train(training);
        }
    }

    /// <summary>A and B from the SVD of the gradient <paramref name="g"/> [out, in]; the base takes the residual.</summary>
    internal static void Initialise(LoraLayer layer, string a, Tensor g, LoraGaConfig ga, string path)
    {
        using var scope = NewDisposeScope();
        int r = layer.Rank(a);
        double s = layer.Scaling(a);
        var (u, sv, vh) = linalg.svd(g, fullMatrices: false);
        if (2 * r > sv.shape[0]) throw new ArgumentException($"LoRA-GA: '{path}' needs 2r = {2 * r} singular directions and has min(in, out) = {sv.shape[0]}; lower r");
        Tensor idxA, idxB;
        switch (ga.Direction)
        {
            case "ArBr": idxA = arange(1, 2 * r, 2); idxB = arange(0, 2 * r, 2); break;
            case "A2rBr": idxA = arange(r, 2 * r); idxB = arange(0, r); break;
            case "ArB2r": idxA = arange(0, r); idxB = arange(r, 2 * r); break;
            default: idxA = idxB = randperm(2 * r)[..r]; break; // PEFT's "random": the same r indices for both
        }
        var loraA = vh.index_select(0, idxA);                                  // [r, in]
        var sB = sv.index_select(0, idxB);
        var loraB = u.index_select(1, idxB) * sB;                              // [out, r]
        switch (ga.Scale)
        {
            case "stable":
                loraB = loraB * (Math.Pow(g.shape[0], 0.25) / Math.Sqrt(ga.StableGamma));
                break;
            case "weight_svd":
                var top = linalg.svdvals(BaseLayers.WeightOutIn(layer.Base).to(ScalarType.Float32))[0];
                if (sB[0].item<float>() > 0) loraB = loraB * (top / sB[0]);
                break;
            case "gd_scale":
                loraA = loraA / s;
                loraB = loraB / s;
                break;
        }
        ResidualInit.Apply(layer, a, loraA, loraB);
    }
}
