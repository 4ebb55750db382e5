using PeftSharp.Training;
using TorchSharp;
using Parameter = TorchSharp.Modules.Parameter;
using AdamW = PeftSharp.Training.AdamW;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Grow;

public class AdamWGrowthTests
{
    [Fact]
    public void A_parameter_that_grows_keeps_its_moments_and_its_new_entries_start_from_zero()
    {
        using var scope = NewDisposeScope();
        var g = new Generator(11);
        var small = new Parameter(randn(2, 3, generator: g));
        var grows = new Parameter(small.detach().clone());
        using var reference = new AdamW([("p", small)], weightDecay: 0);
        using var opt = new AdamW([("p", grows)], weightDecay: 0);
        const double lr = 0.1;
        for (int step = 1; step <= 2; step++)
        {
            var grad = randn(2, 3, generator: g);
            small.grad = grad.clone(); grows.grad = grad.clone();
            reference.Step(lr); opt.Step(lr);
        }
        using (no_grad()) grows.set_(cat([grows.detach().clone(), randn(1, 3, generator: g)], 0));
        var newRow = grows.detach()[2].clone();
        var g3 = randn(3, 3, generator: g);
        small.grad = g3[..2].clone(); grows.grad = g3.clone();
        reference.Step(lr); opt.Step(lr);

        Assert.True(Numerics.Same(small.detach(), grows.detach()[..2]), "the old block continues as if nothing grew");
        // The new row: zero moments, then one update at the tensor's step count (3).
        var m = g3[2] * 0.1;
        var v = g3[2].pow(2) * 0.001;
        var expected = newRow - lr / (1 - Math.Pow(0.9, 3)) * m / (v.sqrt() / Math.Sqrt(1 - Math.Pow(0.999, 3)) + 1e-8);
        Numerics.Close(expected, grows.detach()[2], 1e-6, "new row");
        Assert.Equal([3L, 3L], opt.StateDict()["p.exp_avg"].shape);
    }
}
