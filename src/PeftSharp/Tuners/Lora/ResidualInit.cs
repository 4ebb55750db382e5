using static TorchSharp.torch;

namespace PeftSharp.Tuners.Lora;

/// <summary>
/// Inits that give the adapter a nonzero start (CorDA, LoRA-GA) keep the model's function by moving that start out of
/// the base: W_res = W - s B0 A0, so W_res + s B0 A0 = W at step 0. A0 and B0 are recorded for the save-time
/// conversion to a plain LoRA of the original base (<see cref="LoraConversion"/>).
/// </summary>
internal static class ResidualInit
{
    /// <param name="loraA">[r, in]</param>
    /// <param name="loraB">[out, r]</param>
    public static void Apply(LoraLayer layer, string a, Tensor loraA, Tensor loraB)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        layer.A(a).copy_(loraA);
        layer.B(a).copy_(loraB);
        layer.RecordInitial(a);
        var weight = BaseLayers.Weight(layer.Base);
        // The product as the forward computes it: from the float32 adapter weights just written.
        var residual = BaseLayers.WeightOutIn(layer.Base).to(ScalarType.Float32) - layer.Scaling(a) * layer.LoraProduct(a);
        weight.copy_(BaseLayers.ToStorage(layer.Base, residual).to(weight.dtype));
    }

    /// <summary>The adapter's layers that a data-aware init can set: Linear and Conv1D; an embedding is refused by name.</summary>
    public static List<(string Path, LoraLayer Layer)> LinearLayers(Peft.PeftModel model, string adapter, string method)
    {
        var layers = new List<(string, LoraLayer)>();
        foreach (var (path, layer) in model.TunerLayers())
        {
            if (layer is not LoraLayer lora || !lora.Book.Names.Contains(adapter)) continue;
            if (lora.Kind == BaseKind.Embedding)
                throw new NotSupportedException($"{method} initialises Linear and Conv1D layers; '{path}' is an embedding: leave it out of target_modules");
            layers.Add((path, lora));
        }
        return layers;
    }
}
