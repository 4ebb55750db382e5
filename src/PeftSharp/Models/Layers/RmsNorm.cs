using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;
using TorchSharp.Modules;

namespace PeftSharp.Models.Layers;

/// <summary>RMSNorm (Zhang and Sennrich, 2019): y = w * x / sqrt(mean(x^2) + eps), computed in float32 as transformers does.</summary>
public sealed class RmsNorm : nn.Module<Tensor, Tensor>
{
    readonly double eps;
    public Parameter weight;

    public double Eps => eps;

    public RmsNorm(long size, double eps, ScalarType dtype) : base("RmsNorm")
    {
        this.eps = eps;
        weight = new Parameter(ones(size, dtype: dtype));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var input = x.dtype;
        var h = x.to(ScalarType.Float32);
        var variance = h.pow(2).mean([-1], keepdim: true);
        h = h * rsqrt(variance + eps);
        return (weight * h.to(input)).MoveToOuterDisposeScope();
    }
}
