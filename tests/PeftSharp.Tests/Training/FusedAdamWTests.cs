using PeftSharp.Training;
using TorchSharp.Modules;
using AdamW = PeftSharp.Training.AdamW;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Training;

/// <summary>The flat-buffer AdamW must take the same steps as the per-parameter one and share its checkpoint files.</summary>
public class FusedAdamWTests
{
    static List<(string Name, Parameter P)> Parameters(long seed)
    {
        var g = new Generator((ulong)seed);
        return
        [
            ("a.weight", new Parameter(randn([4, 3], generator: g))),
            ("b.weight", new Parameter(randn([2, 4], generator: g))),
            ("b.bias", new Parameter(randn([2], generator: g))),
        ];
    }

    // A loss whose gradients differ per parameter and per step.
    static void Backward(IReadOnlyList<(string Name, Parameter P)> ps, int step)
    {
        var x = randn([5, 3], generator: new Generator((ulong)(100 + step)));
        var h = nn.functional.linear(x, ps[0].P).tanh();
        var y = nn.functional.linear(h, ps[1].P, ps[2].P);
        (y * y).sum().backward();
    }

    static void Train(IOptimizer opt, IReadOnlyList<(string Name, Parameter P)> ps, int from, int to)
    {
        for (int t = from; t < to; t++)
        {
            opt.ZeroGrad();
            Backward(ps, t);
            GradClip.ClipGradientsTensor(opt.Gradients(), 1.0).Dispose();
            opt.Step(1e-2 * (1 + t % 3));
        }
    }

    [Theory]
    [InlineData(0.0, false)]
    [InlineData(0.1, true)]
    public void Takes_the_same_steps_as_the_per_parameter_AdamW(double weightDecay, bool amsgrad)
    {
        var plain = Parameters(1);
        var fused = Parameters(1);
        using var a = new AdamW(plain, weightDecay: weightDecay, amsgrad: amsgrad);
        using var b = new FusedAdamW(fused, weightDecay: weightDecay, amsgrad: amsgrad);
        Train(a, plain, 0, 6);
        Train(b, fused, 0, 6);
        for (int i = 0; i < plain.Count; i++)
        {
            Assert.True(Numerics.MaxAbsDiff(plain[i].P, Parameters(1)[i].P) > 1e-3, "the parameters did not move");
            Numerics.Close(plain[i].P, fused[i].P, 1e-6, plain[i].Name);
        }
    }

    [Fact]
    public void Checkpoints_move_between_the_two_implementations()
    {
        var dir = Directory.CreateTempSubdirectory("fused-adamw").FullName;
        try
        {
            var reference = Parameters(2);
            using (var full = new FusedAdamW(reference)) Train(full, reference, 0, 6);

            // Three steps fused, saved; resumed in the per-parameter AdamW; and the other way round.
            var first = Parameters(2);
            using (var fused = new FusedAdamW(first)) { Train(fused, first, 0, 3); fused.Save(Path.Combine(dir, "fused.safetensors")); }
            var resumed = first.Select(p => (p.Name, P: new Parameter(p.P.detach().clone()))).ToList();
            using (var plain = new AdamW(resumed)) { plain.Load(Path.Combine(dir, "fused.safetensors")); Train(plain, resumed, 3, 6); }

            var second = Parameters(2);
            using (var plain = new AdamW(second)) { Train(plain, second, 0, 3); plain.Save(Path.Combine(dir, "plain.safetensors")); }
            var resumed2 = second.Select(p => (p.Name, P: new Parameter(p.P.detach().clone()))).ToList();
            using (var fused = new FusedAdamW(resumed2)) { fused.Load(Path.Combine(dir, "plain.safetensors")); Train(fused, resumed2, 3, 6); }

            for (int i = 0; i < reference.Count; i++)
            {
                Numerics.Close(reference[i].P, resumed[i].P, 1e-6, "fused -> plain " + reference[i].Name);
                Numerics.Close(reference[i].P, resumed2[i].P, 1e-6, "plain -> fused " + reference[i].Name);
            }
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    [Fact]
    public void A_gradient_assigned_afresh_is_gathered_into_the_buffer()
    {
        var ps = Parameters(3);
        using var opt = new FusedAdamW(ps, weightDecay: 0);
        opt.ZeroGrad();
        ps[1].P.grad = ones(2, 4);
        var before = ps[1].P.detach().clone();
        opt.Step(0.1);
        // Adam's first step moves every coordinate with a positive gradient by -lr (up to eps).
        Numerics.Close(before - 0.1, ps[1].P, 1e-5, "b.weight");
        Numerics.Close(Parameters(3)[0].P, ps[0].P, 0, "a.weight (zero gradient)");
    }

    [Fact]
    public void Refuses_to_drop_state_and_names_a_parameter_without_a_gradient()
    {
        var ps = Parameters(4);
        using var opt = new FusedAdamW(ps);
        Assert.Throws<NotSupportedException>(() => opt.DropState(["a.weight"]));
        ps[2].P.grad = null;
        var e = Assert.Throws<InvalidOperationException>(() => opt.Step(0.1));
        Assert.Contains("b.bias", e.Message);
    }
}
