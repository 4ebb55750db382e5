using PeftSharp.Peft;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Lora;

/// <summary>
/// PiSSA and OLoRA train against a residual base W_res = W - s B0 A0. To apply the result to the original W,
/// PEFT saves A' = [A; A0], B' = [B, -B0] with rank 2r: W + s B'A' = W_res + s B A. Alpha doubles with the rank
/// (times sqrt 2 under rsLoRA) so the scaling stays s.
/// </summary>
internal static class LoraConversion
{
    /// <summary>Whether an init recorded the adapter's starting A and B (calibration ran).</summary>
    public static bool Recorded(PeftModel model, string adapter) =>
        model.TunerLayers().Any(x => x.Layer is LoraLayer l && l.Book.Names.Contains(adapter) && l.Initial(adapter) is not null);

    public static LoraConfig ToPlainLora(PeftModel model, string adapter, LoraConfig c, Dictionary<string, Tensor> tensors)
    {
        foreach (var (path, layer) in model.TunerLayers())
        {
            if (layer is not LoraLayer lora || !lora.Book.Names.Contains(adapter)) continue;
            var init = lora.Initial(adapter) ?? throw new InvalidOperationException($"'{path}' has no recorded initial weights to convert from");
            var keyA = $"base_model.model.{path}.lora_A.weight";
            var keyB = $"base_model.model.{path}.lora_B.weight";
            tensors[keyA] = cat([tensors[keyA].detach(), init.A], 0);
            tensors[keyB] = cat([tensors[keyB].detach(), -init.B], 1);
        }
        double alphaFactor = c.UseRslora ? Math.Sqrt(2) : 2;
        return c with
        {
            R = 2 * c.R,
            LoraAlpha = alphaFactor * c.LoraAlpha,
            RankPattern = c.RankPattern.ToDictionary(kv => kv.Key, kv => 2 * kv.Value),
            AlphaPattern = c.AlphaPattern.ToDictionary(kv => kv.Key, kv => alphaFactor * kv.Value),
            InitLoraWeights = "true",
        };
    }
}
