using PeftSharp.IO;
using PeftSharp.Tuners;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Training;

/// <summary>
/// LoRA-Pro (Wang et al., "LoRA-Pro: Are Low-Rank Adapters Properly Optimized?", arXiv 2407.18242, ICLR 2025), with
/// AdamW in the full weight space as the authors' code runs it. A LoRA step changes W by s (dB A + B dA), an
/// "equivalent gradient" g~ = s (B g^A + g^B A); LoRA-Pro picks g^A, g^B so that g~ is the best approximation of the full
/// fine-tuning gradient g, which it recovers from LoRA's own gradients (grad_A = s B^T g, grad_B = s g A^T):
/// <code>
/// g^A = (1/s^2) (B^T B)^-1 grad_A + X A
/// g^B = (1/s^2) (I - B (B^T B)^-1 B^T) grad_B (A A^T)^-1 - B X            (X cancels in g~)
/// X solves  B^T B X + X A A^T = -(1/s^2) (B^T B)^-1 grad_A A^T             (g^A, g^B closest to grad_A, grad_B)
/// </code>
/// Each step: g~ from the adjusted gradients, AdamW's moments of g~ (out x in, per layer), the Adam direction
/// d = m^ / (sqrt(v^) + eps), d's LoRA gradients s B^T d and s d A^T adjusted again as above, and A, B moved by -lr times
/// those (decay shrinks each factor by sqrt(1 - lr wd), so s B A by 1 - lr wd; the authors' code also decays the frozen
/// base weight, which an adapter cannot). Inverses are pinv(M + 1e-8 I), as the authors'. Other trainable parameters
/// (biases, heads) train with plain AdamW. The state file holds each layer's moments under its B's name
/// (<c>&lt;B&gt;.lorapro.exp_avg</c>, <c>.exp_avg_sq</c>, <c>.step</c>) beside AdamW's state of the rest.
/// </summary>
public sealed class LoraPro : IOptimizer
{
    const double Delta = 1e-8;
    const string Key = ".lorapro.";

    sealed class Pair(string aName, string name, Parameter a, Parameter b, double scaling)
    {
        public readonly string AName = aName, Name = name;
        public readonly Parameter A = a, B = b;
        public readonly double Scaling = scaling;
        public Tensor? ExpAvg, ExpAvgSq;
        public long Step;
    }

    readonly List<Pair> pairs = new();
    readonly AdamW rest;
    public double Beta1 { get; }
    public double Beta2 { get; }
    public double Eps { get; }
    public double WeightDecay { get; }

    public LoraPro(IReadOnlyList<(string Name, Parameter P)> parameters, IReadOnlyList<LowRankFactors> factors,
        double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weightDecay = 0)
    {
        (Beta1, Beta2, Eps, WeightDecay) = (beta1, beta2, eps, weightDecay);
        var byName = parameters.ToDictionary(p => p.Name, p => p.P);
        foreach (var f in factors)
        {
            if (!byName.TryGetValue(f.A, out var a) || !byName.TryGetValue(f.B, out var b))
                throw new ArgumentException($"optim lorapro: '{(byName.ContainsKey(f.A) ? f.B : f.A)}' is not a trainable parameter of this model");
            pairs.Add(new Pair(f.A, f.B, a, b, f.Scaling));
        }
        var paired = factors.SelectMany(f => new[] { f.A, f.B }).ToHashSet();
        rest = new AdamW(parameters.Where(p => !paired.Contains(p.Name)).ToList(), beta1, beta2, eps, weightDecay, name: "lorapro");
    }

    /// <summary>
    /// The adjusted gradients g^A, g^B of the formula above, from LoRA's gradients; with <paramref name="withX"/> false
    /// the X terms are left out (they do not change the equivalent gradient).
    /// </summary>
    public static (Tensor GradA, Tensor GradB) Adjust(Tensor a, Tensor b, Tensor gradA, Tensor gradB, double s, bool withX = true)
    {
        using var scope = NewDisposeScope();
        var r = a.shape[0];
        var aat = matmul(a, a.t());                                             // [r, r]
        var btb = matmul(b.t(), b);                                             // [r, r]
        var id = eye(r, dtype: a.dtype, device: a.device) * Delta;
        var aatInv = linalg.pinv(aat + id);
        var btbInv = linalg.pinv(btb + id);
        var s2 = s * s;
        var ga = matmul(btbInv, gradA) / s2;                                    // [r, in]
        var gbInPlane = gradB - matmul(b, matmul(btbInv, matmul(b.t(), gradB))); // (I - B (B^T B)^-1 B^T) grad_B: [out, r]
        var gb = matmul(gbInPlane, aatInv) / s2;                                 // [out, r]
        if (withX)
        {
            var x = SolveSylvester(btb, aat, matmul(matmul(btbInv, gradA), a.t()) / -s2);
            ga = ga + matmul(x, a);
            gb = gb - matmul(b, x);
        }
        return (ga.MoveToOuterDisposeScope(), gb.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// X with P X + X Q = C for symmetric positive semi-definite P, Q ([r, r]): in the eigenbases P = U diag(l) U^T and
    /// Q = V diag(m) V^T it is elementwise, X = U ((U^T C V) / (l_i + m_j)) V^T; where l_i + m_j = 0 (B = 0 and a
    /// singular A) the least-norm solution's 0.
    /// </summary>
    public static Tensor SolveSylvester(Tensor p, Tensor q, Tensor c)
    {
        using var scope = NewDisposeScope();
        var (l, u) = linalg.eigh(p);
        var (m, v) = linalg.eigh(q);
        var sums = l.clamp_min(0).unsqueeze(1) + m.clamp_min(0).unsqueeze(0);  // [r, r]
        var f = matmul(matmul(u.t(), c), v);
        var y = where(sums > 0, f / sums, zeros_like(f));
        return matmul(matmul(u, y), v.t()).MoveToOuterDisposeScope();
    }

    public void Step(double lr)
    {
        using var _ = no_grad();
        foreach (var pair in pairs)
        {
            using var scope = NewDisposeScope();
            var (a, b, s) = (pair.A, pair.B, pair.Scaling);
            var gradA = a.grad ?? throw new InvalidOperationException($"optim lorapro: '{pair.Name}' has a gradient but its A has none");
            var gradB = b.grad ?? throw new InvalidOperationException($"optim lorapro: '{pair.Name}' got no gradient this step");

            // The equivalent gradient of the best approximation, and AdamW's moments of it.
            var (ga, gb) = Adjust(a, b, gradA, gradB, s, withX: false);
            var equivalent = (matmul(b, ga) + matmul(gb, a)) * s;                 // [out, in]
            pair.ExpAvg ??= zeros_like(equivalent).DetachFromDisposeScope();
            pair.ExpAvgSq ??= zeros_like(equivalent).DetachFromDisposeScope();
            pair.Step++;
            pair.ExpAvg.lerp_(equivalent, 1 - Beta1);
            pair.ExpAvgSq.mul_(Beta2).addcmul_(equivalent, equivalent, 1 - Beta2);
            var denom = (pair.ExpAvgSq.sqrt() / Math.Sqrt(1 - Math.Pow(Beta2, pair.Step))).add_(Eps);
            var direction = pair.ExpAvg / (1 - Math.Pow(Beta1, pair.Step)) / denom;

            // The direction's LoRA gradients, adjusted the same way, move A and B.
            var (stepA, stepB) = Adjust(a, b, matmul(b.t(), direction) * s, matmul(direction, a.t()) * s, s);
            if (WeightDecay != 0)
            {
                var shrink = Math.Sqrt(1 - lr * WeightDecay);
                a.mul_(shrink);
                b.mul_(shrink);
            }
            a.add_(stepA, -lr);
            b.add_(stepB, -lr);
        }
        rest.Step(lr);
    }

    public void ZeroGrad()
    {
        foreach (var pair in pairs)
            foreach (var p in new[] { pair.A, pair.B })
            {
                var g = p.grad;
                if (g is null) continue;
                g.Dispose();
                p.grad = null;
            }
        rest.ZeroGrad();
    }

    public IReadOnlyList<Tensor> Gradients() =>
        pairs.SelectMany(p => new[] { p.A.grad, p.B.grad }).OfType<Tensor>().Concat(rest.Gradients()).ToList();

    public void DropState(IEnumerable<string> names)
    {
        var list = names.ToList();
        foreach (var pair in pairs.Where(p => list.Contains(p.Name) || list.Contains(p.AName)))
        {
            pair.ExpAvg?.Dispose();
            pair.ExpAvgSq?.Dispose();
            (pair.ExpAvg, pair.ExpAvgSq, pair.Step) = (null, null, 0);
        }
        rest.DropState(list);
    }

    /// <summary>The moments of layer <paramref name="b"/> (its B's name), or null before its first step.</summary>
    public (Tensor ExpAvg, Tensor ExpAvgSq, long Step)? StateOf(string b) =>
        pairs.FirstOrDefault(p => p.Name == b) is { ExpAvg: { } m, ExpAvgSq: { } v } pair ? (m, v, pair.Step) : null;

    public void Save(string path)
    {
        using var scope = NewDisposeScope();
        var d = rest.StateDict();
        foreach (var p in pairs)
        {
            if (p.ExpAvg is null) continue;
            d[p.Name + Key + "exp_avg"] = p.ExpAvg;
            d[p.Name + Key + "exp_avg_sq"] = p.ExpAvgSq!;
            d[p.Name + Key + "step"] = tensor(p.Step);
        }
        SafetensorsWriter.Save(path, d, rest.Metadata());
    }

    public void Load(string path)
    {
        using var _ = no_grad();
        using var file = SafetensorsFile.Open(path);
        AdamW.CheckSameKind(file, "lorapro", amsgrad: false);
        var known = pairs.Select(p => p.Name).ToHashSet();
        var stranger = file.Names.Where(n => n.Contains(Key)).Select(n => n[..n.IndexOf(Key, StringComparison.Ordinal)]).FirstOrDefault(n => !known.Contains(n));
        if (stranger is not null)
            throw new InvalidDataException($"{path}: LoRA-Pro state for '{stranger}', which is not a LoRA layer of this model (another adapter configuration?)");
        foreach (var p in pairs)
        {
            p.ExpAvg?.Dispose();
            p.ExpAvgSq?.Dispose();
            (p.ExpAvg, p.ExpAvgSq, p.Step) = (null, null, 0);
            if (!file.Contains(p.Name + Key + "step")) continue;
            long[] shape = [p.B.shape[0], p.A.shape[1]];
            p.ExpAvg = Moment(file, p.Name + Key + "exp_avg", shape, p.B);
            p.ExpAvgSq = Moment(file, p.Name + Key + "exp_avg_sq", shape, p.B);
            p.Step = AdamW.ReadStep(file, p.Name + Key + "step");
        }
        rest.LoadFrom(file, n => n.Contains(Key));
    }

    static Tensor Moment(SafetensorsFile file, string key, long[] shape, Parameter like)
    {
        if (!file.Contains(key)) throw new InvalidDataException($"{file.Path}: missing '{key}'");
        var t = file.Load(key);
        if (!t.shape.SequenceEqual(shape) || t.dtype != like.dtype)
        {
            var msg = $"{file.Path}: '{key}' is {t.dtype}[{string.Join(",", t.shape)}] but the layer's moments are {like.dtype}[{string.Join(",", shape)}]";
            t.Dispose();
            throw new InvalidDataException(msg);
        }
        return t.to(like.device).DetachFromDisposeScope();
    }

    public void Dispose()
    {
        foreach (var p in pairs)
        {
            p.ExpAvg?.Dispose();
            p.ExpAvgSq?.Dispose();
        }
        rest.Dispose();
    }
}
