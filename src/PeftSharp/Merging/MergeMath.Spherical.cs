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
        var shape = v0.shape;
        if (flatten) { v0 = v0.reshape(-1); v1 = v1.reshape(-1); }
        else if (rowWise) { v0 = v0.transpose(0, -1); v1 = v1.transpose(0, -1); }
        Tensor Unit(Tensor x) => x / x.norm(-1, keepdim: true).clamp_min(1e-7);
        var cos = (Unit(v0) * Unit(v1)).sum(-1, keepdim: true);
        var theta = cos.clamp(-1, 1).acos();
        var sin = theta.sin();
        var slerp = ((theta * (1 - t)).sin() * v0 + (theta * t).sin() * v1) / sin;
        var result = where(sin.abs() < 1e-8, v0 * (1 - t) + v1 * t, slerp);
        if (!flatten && rowWise) result = result.transpose(0, -1);
        result = result.reshape(shape);
        return (baseWeight is null ? result : baseWeight + result).MoveToOuterDisposeScope();
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
        var x = stack(models.Select(m => baseWeight is null ? m : m - baseWeight).ToList()).reshape(models.Count, -1);   // [n, D]
        var w = tensor(weights.ToArray(), dtype: x.dtype);
        if (normalizeWeights) w = w / w.sum();
        var norms = x.norm(-1, keepdim: true);                                                         // [n, 1]
        var units = x / (norms + eps);
        var mean = (units * w.view(-1, 1)).sum(dim: 0);
        double meanNorm = mean.norm().item<float>();
        Tensor result;
        if (meanNorm < eps)
        {
            if (models.Count != 2)
                throw new MergeException($"multislerp, tensor '{tensorName}': the weighted directions cancel out (opposite models with " +
                    "balancing weights): change the weights");
            result = x[0] * w[0] + x[1] * w[1];
        }
        else
        {
            mean = mean / meanNorm;
            var tangents = units - (units * mean).sum(-1, keepdim: true) * mean;
            var g = (tangents * w.view(-1, 1)).sum(dim: 0);
            var gNorm = g.norm() + eps;
            result = (mean * gNorm.cos() + g * (gNorm.sin() / gNorm)) * (norms.squeeze(-1) * w).sum();
        }
        result = result.view(models[0].shape);
        return (baseWeight is null ? result : result + baseWeight).MoveToOuterDisposeScope();
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
        double alpha = 1.0 / models.Count;
        var norms = models.Select(Norm).ToList();
        var valid = Enumerable.Range(0, models.Count).Where(i => norms[i] > tol).ToList();
        if (valid.Count == 0) return zeros_like(models[0]).MoveToOuterDisposeScope();
        var units = valid.Select(i => models[i] / norms[i]).ToList();
        double a = 1.0 / valid.Count;                                  // the weights renormalised over the valid ones
        var u = units.Aggregate((Tensor?)null, (s, v) => s is null ? v * a : s.add_(v * a))!;
        double uNorm = Norm(u);
        u = uNorm < tol ? units[0].clone() : u.div_(uNorm);
        for (int step = 0; step < maxIter; step++)
        {
            var T = zeros_like(u);
            foreach (var ui in units)
            {
                double dot = Math.Clamp(Dot(u, ui), -1, 1), theta = Math.Acos(dot);
                if (theta < tol) continue;
                T.add_((ui - u * dot).mul_(a * theta / Math.Sin(theta)));
            }
            double tNorm = Norm(T);
            if (tNorm < tol) break;
            u = u * Math.Cos(tNorm) + T * (Math.Sin(tNorm) / tNorm);
            double n = Norm(u);
            if (n > tol) u.div_(n);
        }
        return u.mul_(alpha * norms.Sum()).MoveToOuterDisposeScope();
    }

    static double Dot(Tensor a, Tensor b) => (a * b).sum(type: ScalarType.Float64).item<double>();
}
