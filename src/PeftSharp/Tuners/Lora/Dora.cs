using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Lora;

/// <summary>
/// DoRA (Liu et al., 2024, https://arxiv.org/abs/2402.09353): W' = m * (W + s B A) / ||W + s B A||, the norm taken
/// per output feature and detached (treated as a constant in backward, as the paper and PEFT do).
/// </summary>
internal static class Dora
{
    /// <summary>What the adapter adds to the base output <paramref name="baseOutput"/> (which includes the bias).</summary>
    public static Tensor Forward(LoraLayer layer, string a, Tensor x, Tensor baseOutput, bool dropoutActive)
    {
        using var scope = NewDisposeScope();
        double s = layer.Scaling(a);
        var loraWeight = layer.LoraProduct(a).detach();
        var weightNorm = layer.WeightNorm(a, loraWeight, s);
        var magNormScale = (layer.Magnitude(a) / weightNorm).view(1, -1);
        var loraResult = layer.LoraBranch(a, x);
        Tensor baseResult;
        if (dropoutActive)
            baseResult = nn.functional.linear(x, Models_WeightOutIn(layer).to(x.dtype));
        else
        {
            baseResult = baseOutput.to(x.dtype);
            if (BaseLayers.Bias(layer.Base) is { } bias) baseResult = baseResult - bias.to(x.dtype);
        }
        var result = (magNormScale - 1) * baseResult + magNormScale * loraResult * s;
        return result.MoveToOuterDisposeScope();
    }

    static Tensor Models_WeightOutIn(LoraLayer layer) => BaseLayers.WeightOutIn(layer.Base);

    /// <summary>The merged weight m * (W + dW) / ||W + dW|| in the base layer's storage layout.</summary>
    public static Tensor MergedWeight(LoraLayer layer, string a)
    {
        using var scope = NewDisposeScope();
        var w = BaseLayers.WeightOutIn(layer.Base).to(ScalarType.Float32);
        var delta = layer.LoraProduct(a).to(ScalarType.Float32) * layer.Scaling(a);
        var norm = linalg.vector_norm(w + delta, 2, [1]).detach();
        var merged = (layer.Magnitude(a) / norm).view(-1, 1) * (w + delta);
        return BaseLayers.ToStorage(layer.Base, merged).MoveToOuterDisposeScope();
    }
}
