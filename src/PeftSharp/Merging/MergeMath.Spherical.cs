using static TorchSharp.torch;

namespace PeftSharp.Merging;

// Merges on the hypersphere beyond two-model slerp: NuSLERP, Multi-SLERP and the Karcher mean, as mergekit computes them.
public static partial class MergeMath
{
    /// <summary>
    /// NuSLERP (mergekit's <c>nuslerp</c>): slerp from the first model to the second by <c>t = w_1 / (w_0 + w_1)</c>
    /// (0.5 when the weights sum to ~0), over the whole tensor (<paramref name="flatten"/>), or per row of its last
    /// dimension, or with <paramref name="rowWise"/> per slice along dimension 0 (mergekit transposes dim 0 to the
    /// end). Per vector: <c>theta = acos(u0.u1)</c> of the unit vectors, <c>(sin((1-t) theta) v0 + sin(t theta) v1) / sin theta</c>,
    /// linear where <c>|sin theta| &lt; 1e-8</c>. With a base the two task vectors are interpolated and added to it.
    /// </summary>
    public static Tensor NuSlerp(Tensor? baseWeight, IReadOnlyList<Tensor> models, IReadOnlyList<double> weights, bool rowWise, bool flatten)
    {
        if (models.Count != 2 || weights.Count != 2) throw new ArgumentException("nuslerp merges exactly two models (plus an optional base)");
        double sum = weights[0] + weights[1];
        double t = Math.Abs(sum) < 1e-6 ? 0.5 : weights[1] / sum;
        using var scope = NewDisposeScope();
        var v0 = baseWeight is null ? models[0] : models[0] - baseWeight;
        var v1 = baseWeight is null ? models[1] : models[1] - baseWeight;
        // the vectors as rows of a [rows, d] view: one row (flatten), the last dimension, or dimension 0 moved last
        Tensor Rows(Tensor v) => flatten ? v.reshape(1, -1) : rowWise ? v.transpose(0, -1).reshape(-1, v.shape[0]) : v.reshape(-1, v.shape[^1]);
        var r0 = Rows(v0);
        var r1 = Rows(v1);
        // the angle from each row's dot product and norms, then one coefficient per row and input (no unit tensors)
        Tensor dot;
        using (var product = r0 * r1) dot = product.sum(-1, keepdim: true);
        var cos = dot.div_(r0.norm(-1, keepdim: true).clamp_min_(1e-7)).div_(r1.norm(-1, keepdim: true).clamp_min_(1e-7));
        var theta = cos.clamp_(-1, 1).acos_();
        var sin = theta.sin();
        var colinear = sin.abs() < 1e-8;
        var c0 = where(colinear, 1 - t, (theta * (1 - t)).sin_().div_(sin));
        var c1 = where(colinear, t, (theta * t).sin_().div_(sin));
        var rows = r0 * c0;
        using (var second = r1 * c1) rows.add_(second);
        var result = flatten ? rows.view(v0.shape)
            : rowWise ? rows.view(v0.transpose(0, -1).shape).transpose(0, -1).contiguous() : rows.view(v0.shape);
        if (baseWeight is not null) result.add_(baseWeight);
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Multi-SLERP (mergekit's <c>multislerp</c>, https://goddard.blog/posts/multislerp-wow-what-a-cool-idea): each
    /// model (or task vector, with a base) flattened to <c>x_i</c> with norm <c>n_i</c> and direction <c>u_i</c>; with
    /// weights <c>w</c> (normalised to sum 1 unless told not to), <c>m = sum w_i u_i / |sum w_i u_i|</c>, tangent
    /// vectors <c>g_i = u_i - (u_i.m) m</c>, <c>g = sum w_i g_i</c>, and the result
    /// <c>(cos|g| m + sin|g| g / |g|) * sum w_i n_i</c> (<c>|g|</c> offset by eps). Two opposite directions that cancel fall
    /// back to the weighted sum; more than two fail.
    /// </summary>
    public static Tensor MultiSlerp(IReadOnlyList<Tensor> models, IReadOnlyList<double> weights, Tensor? baseWeight = null,
        bool normalizeWeights = true, double eps = 1e-8, string tensorName = "")
    {
        if (models.Count != weights.Count) throw new ArgumentException($"{weights.Count} weights for {models.Count} models");
        if (models.Count == 1) return models[0].clone();
        using var scope = NewDisposeScope();
        // One model at a time: only the sums of whole-tensor size are kept.
        double total = weights.Sum();
        var w = weights.Select(v => normalizeWeights ? v / total : v).ToArray();
        Tensor Point(int i) => baseWeight is null ? models[i].alias() : models[i] - baseWeight;
        var norms = new double[models.Count];
        var mean = zeros_like(models[0]);
        for (int i = 0; i < models.Count; i++)
        {
            using var x = Point(i);
            norms[i] = Math.Sqrt(FlatDot(x, x));
            mean.add_(x, alpha: w[i] / (norms[i] + eps));
        }
        double meanNorm = Math.Sqrt(FlatDot(mean, mean));
        Tensor result;
        if (meanNorm < eps)
        {
            if (models.Count != 2)
                throw new MergeException($"multislerp, tensor '{tensorName}': the weighted directions cancel out (opposite models with " +
                    "balancing weights): change the weights");
            using var x0 = Point(0);
            using var x1 = Point(1);
            result = x0 * w[0] + x1 * w[1];
        }
        else
        {
            mean.div_(meanNorm);
            // tangent vectors at the mean, g = sum_i w_i (u_i - (u_i.m) m)
            var g = zeros_like(mean);
            for (int i = 0; i < models.Count; i++)
            {
                using var x = Point(i);
                double scale = 1 / (norms[i] + eps);
                g.add_(x, alpha: w[i] * scale).add_(mean, alpha: -w[i] * scale * FlatDot(x, mean));
            }
            double gNorm = Math.Sqrt(FlatDot(g, g)) + eps, avgNorm = norms.Select((n, i) => n * w[i]).Sum();
            result = mean.mul_(Math.Cos(gNorm)).add_(g, alpha: Math.Sin(gNorm) / gNorm).mul_(avgNorm);
        }
        if (baseWeight is not null) result.add_(baseWeight);
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Karcher mean (mergekit's <c>karcher</c>, https://arxiv.org/abs/2504.02856): the directions <c>u_i = x_i / |x_i|</c>
    /// of the models with norm above <paramref name="tol"/>, averaged on the sphere with equal weights: from the
    /// normalised mean direction, repeat <c>T = mean_i theta_i / sin(theta_i) (u_i - cos(theta_i) u)</c> (models with
    /// <c>theta_i &lt; tol</c> left out), <c>u = cos|T| u + sin|T| T/|T|</c>, until <c>|T| &lt; tol</c> or
    /// <paramref name="maxIter"/> steps; the result is <c>u * mean_i |x_i|</c> (zero norms included).
    /// </summary>
    public static Tensor Karcher(IReadOnlyList<Tensor> models, int maxIter = 10, double tol = 1e-5)
    {
        if (models.Count == 0) throw new ArgumentException("karcher needs at least one model", nameof(models));
        if (models.Count == 1) return models[0].clone();
        using var scope = NewDisposeScope();
        // The unit vectors u_i = x_i / |x_i| are never stored: each use scales x_i instead, so memory is u and T only.
        double alpha = 1.0 / models.Count;
        var norms = models.Select(m => Math.Sqrt(FlatDot(m, m))).ToList();
        var valid = Enumerable.Range(0, models.Count).Where(i => norms[i] > tol).ToList();
        if (valid.Count == 0) return zeros_like(models[0]).MoveToOuterDisposeScope();
        double a = 1.0 / valid.Count;                                  // the weights renormalised over the valid ones
        var u = zeros_like(models[0]);
        foreach (var i in valid) u.add_(models[i], alpha: a / norms[i]);
        double uNorm = Math.Sqrt(FlatDot(u, u));
        if (uNorm < tol) u.copy_(models[valid[0]]).div_(norms[valid[0]]);
        else u.div_(uNorm);
        var T = zeros_like(u);
        for (int step = 0; step < maxIter; step++)
        {
            T.zero_();
            foreach (var i in valid)
            {
                double dot = Math.Clamp(FlatDot(u, models[i]) / norms[i], -1, 1), theta = Math.Acos(dot);
                if (theta < tol) continue;
                double c = a * theta / Math.Sin(theta);                // T += c (u_i - cos(theta) u)
                T.add_(models[i], alpha: c / norms[i]).add_(u, alpha: -c * dot);
            }
            double tNorm = Math.Sqrt(FlatDot(T, T));
            if (tNorm < tol) break;
            u.mul_(Math.Cos(tNorm)).add_(T, alpha: Math.Sin(tNorm) / tNorm);
            double n = Math.Sqrt(FlatDot(u, u));
            if (n > tol) u.div_(n);
        }
        return u.mul_(alpha * norms.Sum()).MoveToOuterDisposeScope();
    }

    // A dot product over all values without a whole-tensor temporary (BLAS dot in the tensors' dtype, as mergekit's
    // torch.dot), for methods that must hold every model at once.
    static double FlatDot(Tensor a, Tensor b)
    {
        using var dot = a.reshape(-1).dot(b.reshape(-1));
        return dot.to(ScalarType.Float64).item<double>();
    }
}
