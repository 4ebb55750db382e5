using static TorchSharp.torch;

namespace PeftSharp.Merging;

// Merges that interpolate whole weights rather than sum task vectors, and LiNeS depth scaling.
public static partial class MergeMath
{
    /// <summary>
    /// Spherical linear interpolation of two weights treated as flat vectors, as mergekit does:
    /// <c>theta = acos(v0.v1 / |v0||v1|)</c>, <c>slerp = sin((1-t) theta)/sin(theta) v0 + sin(t theta)/sin(theta) v1</c>.
    /// Nearly colinear inputs (|cos| > <paramref name="dotThreshold"/>) fall back to linear interpolation.
    /// t = 0 gives <paramref name="v0"/>, t = 1 gives <paramref name="v1"/>; equal-norm inputs keep their norm.
    /// </summary>
    public static Tensor Slerp(double t, Tensor v0, Tensor v1, double dotThreshold = 0.9995, double eps = 1e-8)
    {
        if (!v0.shape.SequenceEqual(v1.shape))
            throw new ArgumentException($"slerp needs equal shapes, got [{string.Join(",", v0.shape)}] and [{string.Join(",", v1.shape)}]");
        using var scope = NewDisposeScope();
        double n0 = Norm(v0), n1 = Norm(v1);
        // mergekit leaves a (near-)zero vector unnormalised; the dot below then uses it as is.
        double dot = (v0 * v1).sum(type: ScalarType.Float64).item<double>() / (n0 > eps ? n0 : 1) / (n1 > eps ? n1 : 1);
        if (Math.Abs(dot) > dotThreshold) return (v0 * (1 - t) + v1 * t).MoveToOuterDisposeScope();
        double theta = Math.Acos(dot), sinTheta = Math.Sin(theta);
        double s0 = Math.Sin(theta - theta * t) / sinTheta, s1 = Math.Sin(theta * t) / sinTheta;
        return (v0 * s0 + v1 * s1).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Model Stock (https://arxiv.org/abs/2403.19522): moves from the base <paramref name="w0"/> towards the average
    /// of the fine-tuned weights by <c>t = N cos / (1 + (N-1) cos)</c>, where cos is the mean pairwise cosine of
    /// their offsets from the base: <c>w = t * mean(w_i) + (1 - t) * w0</c>. With <paramref name="filterWise"/>, one
    /// angle per row (output filter) instead of one per tensor. Needs at least two fine-tuned weights.
    /// </summary>
    public static Tensor ModelStock(Tensor w0, IReadOnlyList<Tensor> ws, bool filterWise = false)
    {
        if (ws.Count < 2) throw new ArgumentException("model_stock needs the base and at least two other models", nameof(ws));
        using var scope = NewDisposeScope();
        // Rows [R, C] with one angle per row: the whole tensor is one row unless filter-wise (a vector is one row).
        Tensor Rows(Tensor w) => !filterWise ? w.reshape(1, -1) : w.dim() == 1 ? w.unsqueeze(0) : w.reshape(w.shape[0], -1);
        var b = Rows(w0);
        var offsets = ws.Select(w => Rows(w) - b).ToList();
        var cosines = new List<Tensor>();
        for (int i = 0; i < offsets.Count; i++)
            for (int j = i + 1; j < offsets.Count; j++)
            {
                var normProduct = offsets[i].norm(1, false, 2) * offsets[j].norm(1, false, 2);
                cosines.Add(((offsets[i] * offsets[j]).sum(dim: 1) / normProduct.clamp_min(1e-6)).clamp(-1, 1));
            }
        var cos = stack(cosines).mean([0]).unsqueeze(-1);                         // [R, 1]
        int n = ws.Count;
        var t = cos * n / (cos * (n - 1) + 1);
        var mean = stack(ws.Select(Rows).ToList()).mean([0]);
        return (t * mean + (1 - t) * b).reshape(w0.shape).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// NearSwap (mergekit; https://huggingface.co/alchemonaut/QuartetAnemoi-70B-t0.0001): per entry,
    /// <c>w = clamp(t / max(|base - other|, 1e-6), 0, 1)</c> and <c>w other + (1 - w) base</c>: where the models are
    /// within t of each other the other model's value is taken, and the further apart they are the more of the base stays.
    /// </summary>
    public static Tensor NearSwap(double t, Tensor baseWeight, Tensor other)
    {
        using var scope = NewDisposeScope();
        var w = (other - baseWeight).abs_().clamp_min_(1e-6).reciprocal_().mul_(t).clamp_(0, 1);
        return (baseWeight + w * (other - baseWeight)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// LiNeS (https://arxiv.org/abs/2410.17146): the factor by which the task vector of a layer at relative depth
    /// <paramref name="depth"/> in [0, 1] is scaled, <c>alpha + beta * depth</c>: shallow layers keep little of the
    /// fine-tuning (less forgetting), deep layers keep more.
    /// </summary>
    public static double LinesFactor(double depth, double alpha, double beta) => alpha + beta * depth;

    /// <summary>A task vector scaled by <see cref="LinesFactor"/>.</summary>
    public static Tensor LinesScale(Tensor taskVector, double depth, double alpha, double beta) =>
        taskVector * LinesFactor(depth, alpha, beta);

    static double Norm(Tensor v) => Math.Sqrt(Dot(v, v));

    // In float64, freeing the whole-tensor product at once (not at the end of the caller's scope).
    static double Dot(Tensor a, Tensor b)
    {
        using var product = a * b;
        using var sum = product.sum(type: ScalarType.Float64);
        return sum.item<double>();
    }
}
