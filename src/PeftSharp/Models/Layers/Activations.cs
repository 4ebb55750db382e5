using static TorchSharp.torch;

namespace PeftSharp.Models.Layers;

internal static class Activations
{
    /// <summary>GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), as transformers' "gelu_new".</summary>
    public static Tensor GeluTanh(Tensor x)
    {
        using var scope = NewDisposeScope();
        var inner = Math.Sqrt(2.0 / Math.PI) * (x + 0.044715 * pow(x, 3.0));
        return (0.5 * x * (1.0 + tanh(inner))).MoveToOuterDisposeScope();
    }
}
