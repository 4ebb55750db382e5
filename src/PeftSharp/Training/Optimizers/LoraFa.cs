using PeftSharp.Tuners;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Training;

/// <summary>
/// LoRA-FA (Zhang et al., "LoRA-FA: Memory-efficient Low-rank Adaptation", arXiv 2308.03303), as PEFT's
/// <c>LoraFAOptimizer</c>: A stays frozen at its initial value and only B trains, on B's gradient projected so that the
/// update s * dB @ A is the closest one of that form to the full fine-tuning gradient g:
/// <code>
/// min_{g^B} || s g^B A - g ||_F   =>   g^B = (1 / s^2) * grad_B @ (A A^T + 1e-8 I)^+          (grad_B = s g A^T)
/// </code>
/// with s each layer's own scaling (alpha/r, alpha/sqrt(r) under rsLoRA, and rank/alpha patterns), as PEFT reads it
/// from the layer. The projected gradient then goes through AdamW (fused when the set of parameters is fixed) with the
/// run's settings; other trainable parameters (biases, heads, lora_B bias) train with plain AdamW. Since A never changes,
/// its projection is computed once, at the first step. PEFT's own optimizer also casts the projection to bfloat16 under
/// autocast where bfloat16 is available and runs transformers' legacy AdamW (eps 1e-6, decay after the step); here both
/// stay float32 and torch's AdamW, as the rest of the trainer.
/// </summary>
public sealed class LoraFa : IOptimizer
{
    const double Delta = 1e-8;

    readonly IOptimizer adam;
    readonly List<(Parameter A, Parameter B, double Scaling)> pairs = new();
    readonly HashSet<string> frozen;
    Tensor[]? projections; // per pair, (A A^T + delta I)^+ / s^2: A is frozen, so made once

    /// <summary>Freezes every A of <paramref name="factors"/> and trains the other parameters with <paramref name="newAdamW"/>.</summary>
    public LoraFa(IReadOnlyList<(string Name, Parameter P)> parameters, IReadOnlyList<LowRankFactors> factors,
        Func<IReadOnlyList<(string Name, Parameter P)>, IOptimizer> newAdamW)
    {
        var byName = parameters.ToDictionary(p => p.Name, p => p.P);
        foreach (var f in factors)
        {
            if (!byName.TryGetValue(f.A, out var a) || !byName.TryGetValue(f.B, out var b))
                throw new ArgumentException($"optim lorafa: '{(byName.ContainsKey(f.A) ? f.B : f.A)}' is not a trainable parameter of this model");
            pairs.Add((a, b, f.Scaling));
        }
        frozen = factors.Select(f => f.A).ToHashSet();
        foreach (var (a, _, _) in pairs)
        {
            a.requires_grad_(false);
            a.grad?.Dispose();
            a.grad = null;
        }
        adam = newAdamW(parameters.Where(p => !frozen.Contains(p.Name)).ToList());
    }

    /// <summary>The projected gradient of B: (1 / s^2) grad_B (A A^T + delta I)^+, PEFT's formula.</summary>
    public static Tensor ProjectedGradient(Tensor a, Tensor gradB, double scaling)
    {
        using var scope = NewDisposeScope();
        return matmul(gradB, Projection(a, scaling)).MoveToOuterDisposeScope();
    }

    static Tensor Projection(Tensor a, double scaling)
    {
        using var scope = NewDisposeScope();
        var gram = matmul(a, a.t()) + eye(a.shape[0], dtype: a.dtype, device: a.device) * Delta;   // [r, r]
        return (linalg.pinv(gram) / (scaling * scaling)).MoveToOuterDisposeScope();
    }

    public void Step(double lr)
    {
        using (no_grad())
        using (NewDisposeScope())
        {
            projections ??= pairs.Select(p => Projection(p.A, p.Scaling).DetachFromDisposeScope()).ToArray();
            for (var i = 0; i < pairs.Count; i++)
            {
                var grad = pairs[i].B.grad
                    ?? throw new InvalidOperationException($"optim lorafa: B of pair {i} got no gradient this step");
                grad.copy_(matmul(grad, projections[i]));
            }
        }
        adam.Step(lr);
    }

    public void ZeroGrad() => adam.ZeroGrad();

    /// <summary>The raw gradients (clipping acts on them before the projection, as the trainer's clipping precedes PEFT's step).</summary>
    public IReadOnlyList<Tensor> Gradients() => adam.Gradients();

    /// <summary>The A factors are frozen by this optimizer, not by the method: they have no state to drop.</summary>
    public void DropState(IEnumerable<string> names) => adam.DropState(names.Where(n => !frozen.Contains(n)).ToList());

    public IReadOnlyDictionary<string, Tensor> StateOf(string name) => adam.StateOf(name);

    public void Save(string path) => adam.Save(path);
    public void Load(string path) => adam.Load(path);

    public void Dispose()
    {
        adam.Dispose();
        foreach (var p in projections ?? []) p.Dispose();
        projections = null;
    }
}
