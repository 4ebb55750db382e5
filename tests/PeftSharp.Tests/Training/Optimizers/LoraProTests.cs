using PeftSharp.Training;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Training.Optimizers;

/// <summary>
/// LoRA-Pro on one layer where the full fine-tuning gradient is computed too: the adjusted equivalent gradient is its
/// best low-rank approximation, the closed form meets its optimality conditions, and a step is the authors' full-space AdamW.
/// </summary>
public class LoraProTests
{
    const double S = 2.0;
    const ScalarType F64 = ScalarType.Float64;

    /// <summary>W = W0 + s B A on a regression loss: LoRA's gradients of A and B, and the full gradient of W.</summary>
    static (Tensor A, Tensor B, Tensor GradA, Tensor GradB, Tensor Full) Layer(long seed, int step = 0)
    {
        var g = new Generator((ulong)seed);
        var w0 = randn([12, 10], generator: g);
        var a = randn([3, 10], generator: g).requires_grad_();
        var b = (randn([12, 3], generator: g) * 0.3).requires_grad_();
        using var data = new Generator((ulong)(seed * 100 + step));
        var x = randn([20, 10], generator: data);
        var y = randn([20, 12], generator: data);
        var w = (w0 + matmul(b, a) * S).detach().requires_grad_();
        (nn.functional.linear(x, w) - y).pow(2).sum().backward();
        (nn.functional.linear(x, w0 + matmul(b, a) * S) - y).pow(2).sum().backward();
        return (a.detach(), b.detach(), a.grad!, b.grad!, w.grad!);
    }

    static double Norm(Tensor t) => linalg.norm(t.to(F64)).item<double>();

    [Fact]
    public void The_adjusted_equivalent_gradient_is_the_best_approximation_of_the_full_one()
    {
        using var scope = NewDisposeScope();
        var (a, b, gradA, gradB, full) = Layer(1);
        var lora = (matmul(b, gradA) + matmul(gradB, a)) * S;
        var (ga, gb) = LoraPro.Adjust(a, b, gradA, gradB, S);
        var pro = (matmul(b, ga) + matmul(gb, a)) * S;
        double loraError = Norm(lora - full), proError = Norm(pro - full);
        Assert.True(proError < 0.9 * loraError, $"LoRA-Pro's equivalent gradient is {proError:g4} from the full one, plain LoRA's {loraError:g4}");

        // It is the projection of g onto {B X + Y A}: P_B g + g P_A - P_B g P_A, with P the orthogonal projectors.
        var (a64, b64, g64) = (a.to(F64), b.to(F64), full.to(F64));
        var pb = matmul(matmul(b64, linalg.inv(matmul(b64.t(), b64))), b64.t());
        var pa = matmul(matmul(a64.t(), linalg.inv(matmul(a64, a64.t()))), a64);
        var projection = matmul(pb, g64) + matmul(g64, pa) - matmul(matmul(pb, g64), pa);
        Numerics.Close(projection, pro, 2e-4 * Norm(full), "equivalent gradient vs the projection of the full gradient");
    }

    [Fact]
    public void The_closed_form_meets_its_optimality_conditions()
    {
        using var scope = NewDisposeScope();
        var (a, b, gradA, gradB, full) = Layer(2);
        var (ga, gb) = LoraPro.Adjust(a, b, gradA, gradB, S);
        var residual = full - (matmul(b, ga) + matmul(gb, a)) * S;
        var scale = Norm(full);
        // Stationary in g^A and g^B: the residual is orthogonal to every B X and every Y A.
        Numerics.Close(zeros(3, 10), matmul(b.t(), residual), 1e-4 * scale, "B^T (g - g~)");
        Numerics.Close(zeros(12, 3), matmul(residual, a.t()), 1e-4 * scale, "(g - g~) A^T");
        // X cancels in g~ ...
        var (ga0, gb0) = LoraPro.Adjust(a, b, gradA, gradB, S, withX: false);
        Numerics.Close((matmul(b, ga0) + matmul(gb0, a)) * S, (matmul(b, ga) + matmul(gb, a)) * S, 1e-4 * scale, "X changes g~");

        // ... and solves the Sylvester equation, checked against the Kronecker form (I (x) P + Q^T (x) I) vec X = vec C in float64.
        var (btb, aat) = (matmul(b.t(), b), matmul(a, a.t()));
        var c = matmul(matmul(linalg.pinv(btb + eye(3) * 1e-8), gradA), a.t()) / -(S * S);
        var x = LoraPro.SolveSylvester(btb, aat, c);
        Numerics.Close(c, matmul(btb, x) + matmul(x, aat), 1e-4 * Norm(c), "P X + X Q = C");
        var kron = linalg.solve(kron_(eye(3, dtype: F64), btb.to(F64)) + kron_(aat.t().to(F64), eye(3, dtype: F64)), c.to(F64).t().reshape(-1));
        Numerics.Close(kron.reshape(3, 3).t(), x, 1e-4 * Norm(x), "X vs the Kronecker solution");

        // X makes the adjusted gradients the closest to LoRA's own: the objective's gradient in X vanishes there.
        var xv = x.detach().requires_grad_();
        var objective = (ga0 + matmul(xv, a) - gradA).pow(2).sum() + (gb0 - matmul(b, xv) - gradB).pow(2).sum();
        objective.backward();
        Assert.True(Norm(xv.grad!) < 1e-3 * Norm(gradA), $"gradient of the X objective at X: {Norm(xv.grad!):g4}");
    }

    static Tensor kron_(Tensor p, Tensor q) => kron(p.contiguous(), q.contiguous());

    [Fact]
    public void Two_steps_are_AdamW_on_the_equivalent_gradient_then_the_adjustment()
    {
        const double lr = 1e-2, wd = 0.1, beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
        var (a0, b0, _, _, _) = Layer(3);
        var a = new Parameter(a0.clone());
        var b = new Parameter(b0.clone());
        using var opt = new LoraPro([("A", a), ("B", b)], [new("A", "B", S, Embedding: false)], beta1, beta2, eps, wd);
        var (ea, eb) = (a0.to(F64), b0.to(F64));
        Tensor m = zeros(12, 10, dtype: F64), v = zeros(12, 10, dtype: F64);
        for (var t = 1; t <= 2; t++)
        {
            // Gradients at the current A, B from the same data, for both.
            var (gradA, gradB) = Gradients(a, b, t);
            opt.ZeroGrad();
            a.grad = gradA.clone();
            b.grad = gradB.clone();
            opt.Step(lr);

            // The reference, written out in float64 with exact inverses and the Kronecker solve.
            var (ga64, gb64) = (gradA.to(F64), gradB.to(F64));
            var (gA, gB) = Reference(ea, eb, ga64, gb64, withX: false);
            var equivalent = (matmul(eb, gA) + matmul(gB, ea)) * S;
            m = m * beta1 + equivalent * (1 - beta1);
            v = v * beta2 + equivalent * equivalent * (1 - beta2);
            var d = m / (1 - Math.Pow(beta1, t)) / ((v / (1 - Math.Pow(beta2, t))).sqrt() + eps);
            var (sA, sB) = Reference(ea, eb, matmul(eb.t(), d) * S, matmul(d, ea.t()) * S, withX: true);
            var shrink = Math.Sqrt(1 - lr * wd);
            (ea, eb) = (ea * shrink - sA * lr, eb * shrink - sB * lr);
            Numerics.Close(ea, a, 1e-5, $"A after step {t}");
            Numerics.Close(eb, b, 1e-5, $"B after step {t}");
        }
        Assert.True(Numerics.MaxAbsDiff(a0, a) > 1e-3 && Numerics.MaxAbsDiff(b0, b) > 1e-3, "the factors did not move");
        Assert.Equal(2, opt.StepsOf("B"));
        Assert.Equal([12L, 10L], opt.StateOf("B")["exp_avg_sq"].shape);
    }

    static (Tensor GradA, Tensor GradB) Gradients(Tensor a, Tensor b, int step)
    {
        using var g = new Generator(3);
        var w0 = randn([12, 10], generator: g);
        using var data = new Generator((ulong)(300 + step));
        var (x, y) = (randn([20, 10], generator: data), randn([20, 12], generator: data));
        var (la, lb) = (a.detach().clone().requires_grad_(), b.detach().clone().requires_grad_());
        (nn.functional.linear(x, w0 + matmul(lb, la) * S) - y).pow(2).sum().backward();
        return (la.grad!, lb.grad!);
    }

    static (Tensor, Tensor) Reference(Tensor a, Tensor b, Tensor gradA, Tensor gradB, bool withX)
    {
        var (aat, btb) = (matmul(a, a.t()), matmul(b.t(), b));
        var delta = eye(3, dtype: F64) * 1e-8;
        var (aatInv, btbInv) = (linalg.inv(aat + delta), linalg.inv(btb + delta));
        var gA = matmul(btbInv, gradA) / (S * S);
        var gB = matmul(matmul(eye(12, dtype: F64) - matmul(matmul(b, btbInv), b.t()), gradB), aatInv) / (S * S);
        if (!withX) return (gA, gB);
        var c = matmul(matmul(btbInv, gradA), a.t()) / -(S * S);
        var x = linalg.solve(kron_(eye(3, dtype: F64), btb) + kron_(aat.t(), eye(3, dtype: F64)), c.t().reshape(-1)).reshape(3, 3).t();
        return (gA + matmul(x, a), gB - matmul(b, x));
    }

    [Fact]
    public void A_resumed_run_takes_the_steps_of_a_straight_one() =>
        Resume.Check("lorapro");

    [Fact]
    public void A_state_file_of_another_optimizer_is_refused_with_the_optim_to_use()
    {
        var toy = new LowRankToy(4);
        var path = Path.Combine(IO.SafetensorsTests.TempDir(), "adamw-state.safetensors");
        using (var adam = new FusedAdamW(toy.Clone().Parameters)) { toy.Clone().Train(adam, 0, 0); adam.Save(path); }
        using var pro = LowRankOptimizers.Create(new TrainingOptions { Optim = "lorapro" }, toy.Trainable());
        var e = Assert.Throws<InvalidDataException>(() => pro.Load(path));
        Assert.Contains("--optim auto", e.Message);
    }
}
