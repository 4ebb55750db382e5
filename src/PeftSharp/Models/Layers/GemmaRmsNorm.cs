using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;
using TorchSharp.Modules;

namespace PeftSharp.Models.Layers;

/// <summary>
/// Gemma's RMSNorm: y = x / sqrt(mean(x^2) + eps) * (1 + w), all in float32 and cast back only at the end
/// (Llama casts before multiplying by w). The weight starts at zero, so a fresh norm is the identity scale.
/// </summary>
public sealed class GemmaRmsNorm : nn.Module<Tensor, Tensor>
{
    readonly double eps;
    public Parameter weight;

    public double Eps => eps;

    public GemmaRmsNorm(long size, double eps, ScalarType dtype) : base("GemmaRmsNorm")
    {
        this.eps = eps;
        weight = new Parameter(zeros(size, dtype: dtype));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = x.to(ScalarType.Float32);
        h = h * rsqrt(h.pow(2).mean([-1], keepdim: true) + eps);
        return (h * (1.0 + weight.to(ScalarType.Float32))).to(x.dtype).MoveToOuterDisposeScope();
    }
}
