using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Tests;

internal static class Numerics
{
    public static bool Same(Tensor a, Tensor b) =>
        a.shape.SequenceEqual(b.shape) && a.dtype == b.dtype && (a.numel() == 0 || a.eq(b).all().item<bool>());

    public static double MaxAbsDiff(Tensor a, Tensor b)
    {
        Assert.Equal(a.shape, b.shape);
        if (a.numel() == 0) return 0;
        using var d = (a.to(ScalarType.Float64) - b.to(ScalarType.Float64)).abs().max();
        return d.item<double>();
    }

    public static void Close(Tensor expected, Tensor actual, double tol, string what = "")
    {
        var diff = MaxAbsDiff(expected, actual);
        Assert.True(diff <= tol, $"{what}: max abs diff {diff:g4} > {tol:g2}");
    }
}
