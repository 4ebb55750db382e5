using PeftSharp.Training;
using static TorchSharp.torch;
using AdamW = PeftSharp.Training.AdamW;

namespace PeftSharp.Tests.Training.Optimizers;

/// <summary>LoRA-FA: A frozen, B trained on PEFT's projected gradient (1/s^2) grad_B (A A^T + 1e-8 I)^+.</summary>
public class LoraFaTests
{
    [Fact]
    public void The_projection_is_PEFTs_formula_and_the_least_squares_fit_of_the_full_gradient()
    {
        using var scope = NewDisposeScope();
        var g = new Generator(5);
        var a = randn([4, 9], generator: g);
        var full = randn([6, 9], generator: g);         // a full fine-tuning gradient of W = W0 + s B A
        foreach (var s in new[] { 16.0 / 4, 16.0 / Math.Sqrt(4) })   // alpha/r, and rsLoRA's alpha/sqrt(r)
        {
            var gradB = matmul(full, a.t()) * s;            // what autograd gives B
            var projected = LoraFa.ProjectedGradient(a, gradB, s);

            // The formula with plain ops, in float64 with an exact inverse.
            var a64 = a.to(ScalarType.Float64);
            var expected = matmul(gradB.to(ScalarType.Float64), linalg.inv(matmul(a64, a64.t()) + eye(4, dtype: ScalarType.Float64) * 1e-8)) / (s * s);
            Numerics.Close(expected, projected, 1e-5, $"projected gradient, s = {s}");

            // The property it stands for: s g^B A is the closest update of that form to the full gradient (normal equations).
            var residual = matmul(projected, a) * s - full;
            Numerics.Close(zeros(6, 4), matmul(residual, a.t()), 1e-4, "normal equations");
        }
    }

    [Fact]
    public void A_never_changes_and_B_takes_AdamWs_step_on_the_projected_gradient()
    {
        const double lr = 1e-2;
        var toy = new LowRankToy(2);
        var reference = toy.Clone();
        var start = toy.Clone();
        using var opt = LowRankOptimizers.Create(new TrainingOptions { Optim = "lorafa" }, toy.Trainable());
        Assert.False(toy[LowRankToy.LinA].requires_grad);
        Assert.False(toy[LowRankToy.EmbA].requires_grad);

        // One step: the reference computes LoRA-FA's gradient by the formula and gives it to a plain AdamW.
        using var adam = new AdamW(reference.Parameters.Where(p => !p.Name.Contains("_A")).ToList(), weightDecay: 0);
        foreach (var p in reference.Parameters.Where(p => p.Name.Contains("_A"))) p.P.requires_grad_(false);
        opt.ZeroGrad();
        toy.Backward(0);
        opt.Step(lr);
        adam.ZeroGrad();
        reference.Backward(0);
        using (no_grad())
            foreach (var (a, b, s) in new[] { (LowRankToy.LinA, LowRankToy.LinB, LowRankToy.LinScaling), (LowRankToy.EmbA, LowRankToy.EmbB, LowRankToy.EmbScaling) })
            {
                var gradB = reference[b].grad!;
                var gram = matmul(reference[a], reference[a].t()) + eye(reference[a].shape[0]) * 1e-8;
                reference[b].grad = matmul(gradB, linalg.pinv(gram)) / (s * s);
            }
        adam.Step(lr);
        foreach (var (name, p) in toy.Parameters)
            Numerics.Close(reference[name], p, 1e-7, name);

        // More steps: A stays exactly where it started; B moves.
        toy.Train(opt, 1, 5);
        Assert.True(Numerics.Same(start[LowRankToy.LinA], toy[LowRankToy.LinA]));
        Assert.True(Numerics.Same(start[LowRankToy.EmbA], toy[LowRankToy.EmbA]));
        Assert.True(Numerics.MaxAbsDiff(start[LowRankToy.LinB], toy[LowRankToy.LinB]) > 1e-3);
    }

    [Fact]
    public void A_resumed_run_takes_the_steps_of_a_straight_one() =>
        Resume.Check("lorafa");
}
