using PeftSharp.Training;
using TorchSharp.Modules;
using AdamW = PeftSharp.Training.AdamW;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Training;

public class AdamWTests
{
    static readonly double[] Start = [0.5, -1.25, 2.0, 0.0];
    static readonly double[][] Grads = [[0.1, -0.2, 0.3, 0.0], [-0.4, 0.05, 0.3, 1e-3], [0.2, 0.2, -0.1, -2.0]];
    static readonly double[] Lrs = [1e-2, 5e-3, 2e-2];

    /// <summary>torch.optim.AdamW's update written out in doubles.</summary>
    static double[] Reference(double b1, double b2, double eps, double wd, bool amsgrad)
    {
        var p = (double[])Start.Clone();
        var m = new double[p.Length];
        var v = new double[p.Length];
        var vmax = new double[p.Length];
        for (var t = 1; t <= Grads.Length; t++)
        {
            var lr = Lrs[t - 1];
            for (var i = 0; i < p.Length; i++)
            {
                var g = Grads[t - 1][i];
                p[i] *= 1 - lr * wd;
                m[i] = b1 * m[i] + (1 - b1) * g;
                v[i] = b2 * v[i] + (1 - b2) * g * g;
                vmax[i] = Math.Max(vmax[i], v[i]);
                var denom = Math.Sqrt(amsgrad ? vmax[i] : v[i]) / Math.Sqrt(1 - Math.Pow(b2, t)) + eps;
                p[i] -= lr / (1 - Math.Pow(b1, t)) * m[i] / denom;
            }
        }
        return p;
    }

    static double[] RunOptimizer(double b1, double b2, double eps, double wd, bool amsgrad, int steps = 3, AdamW? opt = null, Parameter? param = null)
    {
        param ??= new Parameter(tensor(Start.Select(x => (float)x).ToArray()));
        opt ??= new AdamW([("p", param)], b1, b2, eps, wd, amsgrad);
        for (var t = opt.StepCount + 1; t <= steps; t++)
        {
            using (var loss = (param * tensor(Grads[t - 1].Select(x => (float)x).ToArray())).sum()) loss.backward();
            opt.Step(Lrs[t - 1]);
            opt.ZeroGrad();
        }
        return param.data<float>().ToArray().Select(x => (double)x).ToArray();
    }

    [Theory]
    [InlineData(0.9, 0.999, 1e-8, 0.0, false)]
    [InlineData(0.9, 0.999, 1e-8, 0.1, false)]
    [InlineData(0.8, 0.95, 1e-6, 0.05, true)]
    public void Matches_the_pytorch_update_written_out_in_doubles(double b1, double b2, double eps, double wd, bool amsgrad)
    {
        var expected = Reference(b1, b2, eps, wd, amsgrad);
        var actual = RunOptimizer(b1, b2, eps, wd, amsgrad);
        for (var i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= 2e-6 * Math.Max(1, Math.Abs(expected[i])), $"[{i}] expected {expected[i]} got {actual[i]}");
    }

    [Fact]
    public void First_step_moves_each_weight_by_about_lr_and_decay_is_decoupled()
    {
        using var p = new Parameter(tensor(new[] { 1.0f, -2.0f }));
        using var opt = new AdamW([("p", p)], weightDecay: 0.5);
        using (var loss = (p * tensor(new[] { 3.0f, -0.001f })).sum()) loss.backward();
        opt.Step(0.1);
        var v = p.data<float>().ToArray();
        // p * (1 - lr*wd) - lr * sign(g): decay does not pass through the adaptive denominator.
        Assert.Equal(1.0 * 0.95 - 0.1, v[0], 5);
        Assert.Equal(-2.0 * 0.95 + 0.1, v[1], 4);
    }

    [Fact]
    public void Saved_state_continues_bit_for_bit()
    {
        using var dir = new TempDir();
        var straight = RunOptimizer(0.9, 0.999, 1e-8, 0.01, true);

        var p = new Parameter(tensor(Start.Select(x => (float)x).ToArray()));
        using (var first = new AdamW([("p", p)], 0.9, 0.999, 1e-8, 0.01, true))
        {
            RunOptimizer(0.9, 0.999, 1e-8, 0.01, true, steps: 2, opt: first, param: p);
            first.Save(dir.Combine("opt.safetensors"));
        }
        using var resumed = new AdamW([("p", p)], 0.9, 0.999, 1e-8, 0.01, true);
        resumed.Load(dir.Combine("opt.safetensors"));
        Assert.Equal(2, resumed.StepCount);
        var continued = RunOptimizer(0.9, 0.999, 1e-8, 0.01, true, steps: 3, opt: resumed, param: p);
        Assert.Equal(straight, continued);
    }

    [Fact]
    public void Loading_state_for_another_parameter_set_is_refused()
    {
        using var dir = new TempDir();
        using var p = new Parameter(tensor(new[] { 1.0f }));
        using (var opt = new AdamW([("a", p)]))
        {
            using (var l = p.sum()) l.backward();
            opt.Step(0.1);
            opt.Save(dir.Combine("o.safetensors"));
        }
        using var other = new AdamW([("b", p)]);
        var e = Assert.Throws<InvalidDataException>(() => other.Load(dir.Combine("o.safetensors")));
        Assert.Contains("'a'", e.Message);
    }
}
