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
/// (biases, heads) train with plain AdamW. Layers of the same shapes and scaling (q_proj of every decoder layer, say)
/// are updated together as one batch of matrices, so a step costs a few dozen kernels per shape, not per layer. The
/// state file holds each layer's moments under its B's name (<c>&lt;B&gt;.lorapro.exp_avg</c>, <c>.exp_avg_sq</c>,
/// <c>.step</c>) beside AdamW's state of the rest.
/// </summary>
public sealed class LoraPro : IOptimizer
{
    const double Delta = 1e-8;
    const string Key = ".lorapro.";

    sealed record Pair(string AName, string Name, Parameter A, Parameter B);

    /// <summary>Layers of one shape and scaling, stacked each step: moments [L, out, in], one step count.</summary>
    sealed class Bucket(List<Pair> pairs, double scaling)
    {
        public readonly List<Pair> Pairs = pairs;
        public readonly double Scaling = scaling;
        public Tensor? ExpAvg, ExpAvgSq;
        public long Step;

        public void Clear()
        {
            ExpAvg?.Dispose();
            ExpAvgSq?.Dispose();
            (ExpAvg, ExpAvgSq, Step) = (null, null, 0);
        }
    }

    readonly List<Bucket> buckets = new();
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
        var pairs = new List<(Pair Pair, double Scaling)>();
        foreach (var f in factors)
        {
            if (!byName.TryGetValue(f.A, out var a) || !byName.TryGetValue(f.B, out var b))
                throw new ArgumentException($"optim lorapro: '{(byName.ContainsKey(f.A) ? f.B : f.A)}' is not a trainable parameter of this model");
            pairs.Add((new Pair(f.A, f.B, a, b), f.Scaling));
        }
        foreach (var same in pairs.GroupBy(p => (string.Join(",", p.Pair.A.shape), string.Join(",", p.Pair.B.shape), p.Scaling, p.Pair.A.dtype, p.Pair.A.device_type, p.Pair.A.device_index)))
            buckets.Add(new Bucket(same.Select(p => p.Pair).ToList(), same.Key.Scaling));
        var paired = factors.SelectMany(f => new[] { f.A, f.B }).ToHashSet();
        rest = new AdamW(parameters.Where(p => !paired.Contains(p.Name)).ToList(), beta1, beta2, eps, weightDecay, name: "lorapro");
    }

    static Tensor T(Tensor m) => m.transpose(-2, -1);

    /// <summary>
    /// The adjusted gradients g^A, g^B of the formula above, from LoRA's gradients (one layer, or a batch [L, ...]); with
    /// <paramref name="withX"/> false the X terms are left out (they do not change the equivalent gradient).
    /// </summary>
    public static (Tensor GradA, Tensor GradB) Adjust(Tensor a, Tensor b, Tensor gradA, Tensor gradB, double s, bool withX = true)
    {
        using var scope = NewDisposeScope();
        var r = a.shape[^2];
        var aat = matmul(a, T(a));                                              // [r, r]
        var btb = matmul(T(b), b);                                              // [r, r]
        var id = eye(r, dtype: a.dtype, device: a.device) * Delta;
        var aatInv = linalg.pinv(aat + id);
        var btbInv = linalg.pinv(btb + id);
        var s2 = s * s;
        var ga = matmul(btbInv, gradA) / s2;                                    // [r, in]
        var gbInPlane = gradB - matmul(b, matmul(btbInv, matmul(T(b), gradB))); // (I - B (B^T B)^-1 B^T) grad_B: [out, r]
        var gb = matmul(gbInPlane, aatInv) / s2;                                 // [out, r]
        if (withX)
        {
            var x = SolveSylvester(btb, aat, matmul(matmul(btbInv, gradA), T(a)) / -s2);
            ga = ga + matmul(x, a);
            gb = gb - matmul(b, x);
        }
        return (ga.MoveToOuterDisposeScope(), gb.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// X with P X + X Q = C for symmetric positive semi-definite P, Q ([r, r], or batches of them): in the eigenbases
    /// P = U diag(l) U^T and Q = V diag(m) V^T it is elementwise, X = U ((U^T C V) / (l_i + m_j)) V^T; where
    /// l_i + m_j = 0 (B = 0 and a singular A) the least-norm solution's 0.
    /// </summary>
    public static Tensor SolveSylvester(Tensor p, Tensor q, Tensor c)
    {
        using var scope = NewDisposeScope();
        var (l, u) = linalg.eigh(p);
        var (m, v) = linalg.eigh(q);
        var sums = l.clamp_min(0).unsqueeze(-1) + m.clamp_min(0).unsqueeze(-2);  // [r, r]
        var f = matmul(matmul(T(u), c), v);
        var y = where(sums > 0, f / sums, zeros_like(f));
        return matmul(matmul(u, y), T(v)).MoveToOuterDisposeScope();
    }

    public void Step(double lr)
    {
        using var _ = no_grad();
        foreach (var bucket in buckets)
        {
            using var scope = NewDisposeScope();
            var s = bucket.Scaling;
            var a = stack(bucket.Pairs.Select(p => (Tensor)p.A));                  // [L, r, in]
            var b = stack(bucket.Pairs.Select(p => (Tensor)p.B));                  // [L, out, r]
            var gradA = stack(bucket.Pairs.Select(p => p.A.grad ?? throw NoGradient(p.AName)));
            var gradB = stack(bucket.Pairs.Select(p => p.B.grad ?? throw NoGradient(p.Name)));

            // The equivalent gradient of the best approximation, and AdamW's moments of it.
            var (ga, gb) = Adjust(a, b, gradA, gradB, s, withX: false);
            var equivalent = (matmul(b, ga) + matmul(gb, a)) * s;                 // [L, out, in]
            bucket.ExpAvg ??= zeros_like(equivalent).DetachFromDisposeScope();
            bucket.ExpAvgSq ??= zeros_like(equivalent).DetachFromDisposeScope();
            bucket.Step++;
            bucket.ExpAvg.lerp_(equivalent, 1 - Beta1);
            bucket.ExpAvgSq.mul_(Beta2).addcmul_(equivalent, equivalent, 1 - Beta2);
            var denom = (bucket.ExpAvgSq.sqrt() / Math.Sqrt(1 - Math.Pow(Beta2, bucket.Step))).add_(Eps);
            var direction = bucket.ExpAvg / (1 - Math.Pow(Beta1, bucket.Step)) / denom;

            // The direction's LoRA gradients, adjusted the same way, move A and B.
            var (stepA, stepB) = Adjust(a, b, matmul(T(b), direction) * s, matmul(direction, T(a)) * s, s);
            var shrink = Math.Sqrt(1 - lr * WeightDecay);
            for (var i = 0; i < bucket.Pairs.Count; i++)
                foreach (var (p, delta) in new[] { (bucket.Pairs[i].A, stepA[i]), (bucket.Pairs[i].B, stepB[i]) })
                {
                    if (WeightDecay != 0) p.mul_(shrink);
                    p.add_(delta, -lr);
                }
        }
        rest.Step(lr);
    }

    static InvalidOperationException NoGradient(string name) => new($"optim lorapro: '{name}' got no gradient this step");

    IEnumerable<Parameter> Factors() => buckets.SelectMany(b => b.Pairs).SelectMany(p => new[] { p.A, p.B });

    public void ZeroGrad()
    {
        foreach (var p in Factors())
        {
            var g = p.grad;
            if (g is null) continue;
            g.Dispose();
            p.grad = null;
        }
        rest.ZeroGrad();
    }

    public IReadOnlyList<Tensor> Gradients() => Factors().Select(p => p.grad).OfType<Tensor>().Concat(rest.Gradients()).ToList();

    /// <summary>Layers share their moments with the others of their shape: their state cannot be dropped alone.</summary>
    public void DropState(IEnumerable<string> names)
    {
        var list = names.ToList();
        if (buckets.SelectMany(b => b.Pairs).FirstOrDefault(p => list.Contains(p.Name) || list.Contains(p.AName)) is { } pair)
            throw new NotSupportedException($"optim lorapro keeps the moments of '{pair.Name}' with those of its layer's shape and cannot drop them; use --optim auto");
        rest.DropState(list);
    }

    /// <summary>
    /// A layer's moments are kept under its B's name (<c>exp_avg</c>, <c>exp_avg_sq</c>: [out, in], the shape of B @ A,
    /// which does not change with the rank; views, which the caller disposes); its A has none; other parameters have AdamW's.
    /// </summary>
    public IReadOnlyDictionary<string, Tensor> StateOf(string name)
    {
        var d = new Dictionary<string, Tensor>();
        foreach (var bucket in buckets)
            for (var i = 0; i < bucket.Pairs.Count; i++)
            {
                if (bucket.Pairs[i].AName == name) return d;
                if (bucket.Pairs[i].Name != name) continue;
                if (bucket.ExpAvg is { } m) (d["exp_avg"], d["exp_avg_sq"]) = (m[i], bucket.ExpAvgSq![i]);
                return d;
            }
        return rest.StateOf(name);
    }

    /// <summary>Optimizer steps the layer whose B is <paramref name="b"/> has taken.</summary>
    public long StepsOf(string b) => buckets.FirstOrDefault(k => k.Pairs.Any(p => p.Name == b))?.Step ?? 0;

    public void Save(string path)
    {
        using var scope = NewDisposeScope();
        var d = rest.StateDict();
        foreach (var bucket in buckets)
        {
            if (bucket.ExpAvg is null) continue;
            for (var i = 0; i < bucket.Pairs.Count; i++)
            {
                var name = bucket.Pairs[i].Name;
                d[name + Key + "exp_avg"] = bucket.ExpAvg[i];
                d[name + Key + "exp_avg_sq"] = bucket.ExpAvgSq![i];
                d[name + Key + "step"] = tensor(bucket.Step);
            }
        }
        SafetensorsWriter.Save(path, d, rest.Metadata());
    }

    public void Load(string path)
    {
        using var _ = no_grad();
        using var file = SafetensorsFile.Open(path);
        AdamW.CheckSameKind(file, "lorapro", amsgrad: false);
        var known = buckets.SelectMany(b => b.Pairs).Select(p => p.Name).ToHashSet();
        var stranger = file.Names.Where(n => n.Contains(Key)).Select(n => n[..n.IndexOf(Key, StringComparison.Ordinal)]).FirstOrDefault(n => !known.Contains(n));
        if (stranger is not null)
            throw new InvalidDataException($"{path}: LoRA-Pro state for '{stranger}', which is not a LoRA layer of this model (another adapter configuration?)");
        foreach (var bucket in buckets)
        {
            bucket.Clear();
            var present = bucket.Pairs.Where(p => file.Contains(p.Name + Key + "step")).ToList();
            if (present.Count == 0) continue;
            if (present.Count != bucket.Pairs.Count)
                throw new InvalidDataException($"{path}: no LoRA-Pro state for '{bucket.Pairs.First(p => !present.Contains(p)).Name}', but state for other layers");
            var steps = bucket.Pairs.Select(p => AdamW.ReadStep(file, p.Name + Key + "step")).Distinct().ToList();
            if (steps.Count != 1) throw new InvalidDataException($"{path}: layers of the same shape were saved at different step counts ({string.Join(", ", steps)})");
            var first = bucket.Pairs[0];
            long[] shape = [bucket.Pairs.Count, first.B.shape[0], first.A.shape[1]];
            bucket.ExpAvg = zeros(shape, dtype: first.B.dtype, device: first.B.device).DetachFromDisposeScope();
            bucket.ExpAvgSq = zeros(shape, dtype: first.B.dtype, device: first.B.device).DetachFromDisposeScope();
            for (var i = 0; i < bucket.Pairs.Count; i++)
            {
                CopyInto(file, bucket.Pairs[i].Name + Key + "exp_avg", bucket.ExpAvg[i]);
                CopyInto(file, bucket.Pairs[i].Name + Key + "exp_avg_sq", bucket.ExpAvgSq[i]);
            }
            bucket.Step = steps[0];
        }
        rest.LoadFrom(file, n => n.Contains(Key));
    }

    static void CopyInto(SafetensorsFile file, string key, Tensor target)
    {
        using var view = target;
        if (!file.Contains(key)) throw new InvalidDataException($"{file.Path}: missing '{key}'");
        using var t = file.Load(key);
        if (!t.shape.SequenceEqual(view.shape) || t.dtype != view.dtype)
            throw new InvalidDataException($"{file.Path}: '{key}' is {t.dtype}[{string.Join(",", t.shape)}] but the layer's moments are {view.dtype}[{string.Join(",", view.shape)}]");
        view.copy_(t);
    }

    public void Dispose()
    {
        foreach (var b in buckets) b.Clear();
        rest.Dispose();
    }
}
