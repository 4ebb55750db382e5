using static TorchSharp.torch;

namespace PeftSharp.Merging;

/// <summary>
/// Merges one tensor at a time: loads that tensor from each input, applies the method with the parameters that hold
/// for it (by name and depth), and returns the result. Nothing is kept between tensors.
/// </summary>
internal sealed class TensorMerger(MergeMethod method, MergeInputs inputs, MergeParameters parameters, LayerDepth depth,
    LinesConfig? lines, long seed)
{
    /// <summary>Merging runs in float32 (float64 stays float64) whatever the stored dtype, as PEFT's reference does.</summary>
    public static ScalarType ComputeType(ScalarType stored) => stored == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32;

    public static bool IsFloat(ScalarType t) => t is ScalarType.Float16 or ScalarType.BFloat16 or ScalarType.Float32 or ScalarType.Float64;

    /// <summary>The merged tensor, in the compute dtype.</summary>
    public Tensor Merged(string name, ScalarType compute)
    {
        using var scope = NewDisposeScope();
        double d = depth.Of(name);
        var baseWeight = inputs.Base?.Load(name).to(compute);
        var merged = method.Kind == MergeKind.TaskVectors
            ? TaskVectorDelta(name, d, baseWeight!, compute).add_(baseWeight!)
            : WithLines(d, baseWeight, WholeWeights(name, d, baseWeight, compute));
        return merged.MoveToOuterDisposeScope();
    }

    /// <summary>How the merge changes the base tensor (for adapter output), in the compute dtype.</summary>
    public Tensor Delta(string name, ScalarType compute)
    {
        using var scope = NewDisposeScope();
        double d = depth.Of(name);
        var baseWeight = inputs.Base!.Load(name).to(compute);
        var delta = method.Kind == MergeKind.TaskVectors
            ? TaskVectorDelta(name, d, baseWeight, compute)
            : WithLines(d, baseWeight, WholeWeights(name, d, baseWeight, compute)) - baseWeight;
        return delta.MoveToOuterDisposeScope();
    }

    Tensor TaskVectorDelta(string name, double d, Tensor baseWeight, ScalarType compute)
    {
        var models = inputs.NonBase.Where(m => m.Source.Contains(name)).ToList();
        if (models.Count == 0) return zeros_like(baseWeight);
        using var scope = NewDisposeScope();     // frees the task vectors as soon as they are mixed
        var generators = new List<Generator>();
        try
        {
            var tvs = models.Select(m =>
            {
                var origin = m.Origin!;
                var originWeight = ReferenceEquals(origin, inputs.Base) ? baseWeight : origin.Load(name).to(compute);
                Generator? g = null;
                if (method.Sparsify == Sparsification.Random) generators.Add(g = new Generator(Seed(name, m.Index), device: null));
                return new TaskVectorInput(m.Source.TaskVector(name, origin, originWeight, compute),
                    parameters.Number("weight", m.Entry, name, d),
                    parameters.Number("density", m.Entry, name, d, 1.0),
                    parameters.Number("gamma", m.Entry, name, d, 0.01), g);
            }).ToList();
            var options = new TaskVectorOptions(
                parameters.Flag("normalize", name, d, method.DefaultNormalize),
                parameters.Flag("rescale", name, d, method.DefaultRescale),
                parameters.SignMethod(name, d),
                parameters.Convention(name, d));
            var mixed = TaskVectorMerge.Mix(method, tvs, options);
            if (lines is not null) mixed.mul_(MergeMath.LinesFactor(d, lines.Alpha, lines.Beta));
            return mixed.MoveToOuterDisposeScope();
        }
        finally
        {
            foreach (var g in generators) g.Dispose();
        }
    }

    Tensor WholeWeights(string name, double d, Tensor? baseWeight, ScalarType compute)
    {
        switch (method.Kind)
        {
            case MergeKind.Linear:
                var models = inputs.Models.Where(m => m.Source.Contains(name)).ToList();
                var weights = models.Select(m => parameters.Number("weight", m.Entry, name, d)).ToList();
                Tensor? sum = null;
                for (int i = 0; i < models.Count; i++)   // one model's tensor at a time
                {
                    var term = models[i].Source.Load(name).to(compute).mul_(weights[i]);
                    if (sum is null) sum = term;
                    else { sum.add_(term); term.Dispose(); }
                }
                if (!parameters.Flag("normalize", name, d, method.DefaultNormalize)) return sum!;
                double total = weights.Sum();
                if (Math.Abs(total) < 1e-8)
                    throw new MergeException($"tensor '{name}': the weights sum to {total}, so linear cannot normalise by them; set normalize: false");
                return sum!.div_(total);
            case MergeKind.Slerp:
                var other = inputs.NonBase.Single();
                if (!other.Source.Contains(name)) return baseWeight!.alias();
                return MergeMath.Slerp(parameters.Number("t", null, name, d), baseWeight!, other.Source.Load(name).to(compute));
            case MergeKind.ModelStock:
                var ws = inputs.NonBase.Where(m => m.Source.Contains(name)).Select(m => m.Source.Load(name).to(compute)).ToList();
                if (ws.Count < 2) return baseWeight!.alias();
                return MergeMath.ModelStock(baseWeight!, ws, parameters.Flag("filter_wise", name, d, false));
            default:
                throw new InvalidOperationException(method.Kind.ToString());
        }
    }

    // LiNeS on top of a method that returns whole weights: scale its change from the base.
    Tensor WithLines(double d, Tensor? baseWeight, Tensor merged) =>
        lines is null ? merged : baseWeight! + (merged - baseWeight!) * MergeMath.LinesFactor(d, lines.Alpha, lines.Beta);

    // One random stream per (seed, tensor, model): results do not depend on the order tensors are visited in.
    ulong Seed(string name, int model)
    {
        ulong h = 14695981039346656037UL ^ (ulong)seed;
        foreach (var c in name) h = (h ^ c) * 1099511628211UL;
        return (h ^ (ulong)model) * 1099511628211UL;
    }
}
