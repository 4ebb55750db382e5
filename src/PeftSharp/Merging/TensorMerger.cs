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
        var merged = method.Kind is MergeKind.TaskVectors or MergeKind.Pcb
            ? TaskVectorDelta(name, d, baseWeight!, compute).add_(baseWeight!)
            : WithLines(name, baseWeight, WholeWeights(name, d, baseWeight, compute));
        return merged.MoveToOuterDisposeScope();
    }

    /// <summary>How the merge changes the base tensor (for adapter output), in the compute dtype.</summary>
    public Tensor Delta(string name, ScalarType compute)
    {
        using var scope = NewDisposeScope();
        double d = depth.Of(name);
        var baseWeight = inputs.Base!.Load(name).to(compute);
        var delta = method.Kind is MergeKind.TaskVectors or MergeKind.Pcb
            ? TaskVectorDelta(name, d, baseWeight, compute)
            : WithLines(name, baseWeight, WholeWeights(name, d, baseWeight, compute)) - baseWeight;
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
                if (method.Sparsify is Sparsification.Random or Sparsification.Della)
                    generators.Add(g = new Generator(Seed(name, m.Index), device: null));
                double density = method.Kind == MergeKind.TaskVectors ? parameters.Number("density", m.Entry, name, d) : 1;
                double epsilon = method.Sparsify == Sparsification.Della ? parameters.Number("epsilon", m.Entry, name, d) : 0;
                if (method.Sparsify == Sparsification.Della && density is > 0 and < 1 && (density - epsilon <= 0 || density + epsilon >= 1))
                    throw new MergeException($"{method.Name}, model '{m.Entry.Model}', tensor '{name}': density {density} +/- epsilon {epsilon} " +
                        "must stay inside (0, 1), the range of keep probabilities: lower epsilon");
                return new TaskVectorInput(m.Source.TaskVector(name, origin, originWeight, compute),
                    parameters.Number("weight", m.Entry, name, d), density,
                    method.Sparsify == Sparsification.Breadcrumbs ? parameters.Number("gamma", m.Entry, name, d) : 0,
                    g, epsilon);
            }).ToList();
            Tensor mixed;
            if (method.Kind == MergeKind.Pcb)
                mixed = MergeMath.Pcb(tvs.Select(t => t.TaskVector).ToList(), tvs.Select(t => t.Weight).ToList(),
                    parameters.Number("pcb_ratio", null, name, d));
            else
                mixed = Mix(name, d, tvs);
            if (lines is not null) mixed.mul_(MergeMath.LinesFactor(depth.LinesOf(name), lines.Alpha, lines.Beta));
            return mixed.MoveToOuterDisposeScope();
        }
        finally
        {
            foreach (var g in generators) g.Dispose();
        }
    }

    // mergekit's generalized task arithmetic, lambda included
    Tensor Mix(string name, double d, List<TaskVectorInput> tvs)
    {
        var options = new TaskVectorOptions(
            parameters.Flag("normalize", name, d),
            parameters.Flag("rescale", name, d),
            method.Consensus ? parameters.SignMethod(name, d) : SignMethod.Total,
            method.Consensus ? parameters.Convention(name, d) : TiesConvention.Mergekit);
        var mixed = TaskVectorMerge.Mix(method, tvs, options);
        double lambda = parameters.Number("lambda", null, name, d);
        return lambda == 1 ? mixed : mixed.mul_(lambda);
    }

    Tensor WholeWeights(string name, double d, Tensor? baseWeight, ScalarType compute)
    {
        List<Tensor> Load(IEnumerable<MergeInput> ms) => ms.Select(m => m.Source.Load(name).to(compute)).ToList();
        var others = inputs.NonBase.Where(m => m.Source.Contains(name)).ToList();
        switch (method.Kind)
        {
            case MergeKind.Linear:
                return Linear(name, d, compute);
            case MergeKind.Passthrough:
                var only = inputs.Models.Single();
                var scale = parameters.NumberOrNull("scale", only.Entry, name, d);
                var copy = only.Source.Load(name).to(compute);
                return scale is double s ? copy.mul_(s) : copy;
            case MergeKind.Slerp:
                if (others.Count == 0) return baseWeight!.alias();
                return MergeMath.Slerp(parameters.Number("t", null, name, d), baseWeight!, Load(others)[0]);
            case MergeKind.ModelStock:
                if (others.Count < 2) return baseWeight!.alias();
                return MergeMath.ModelStock(baseWeight!, Load(others), parameters.Flag("filter_wise", name, d));
            case MergeKind.Sce:
                if (others.Count == 0) return baseWeight!.alias();
                return MergeMath.Sce(baseWeight!, others.Count, i => others[i].Source.Load(name).to(compute), parameters.Number("select_topk", null, name, d));
            case MergeKind.NearSwap:
                if (others.Count == 0) return baseWeight!.alias();
                return MergeMath.NearSwap(parameters.Number("t", null, name, d), baseWeight!, Load(others)[0]);
            case MergeKind.NuSlerp:
                if (others.Count < 2) return others.Count == 1 ? Load(others)[0] : baseWeight!.alias();
                return MergeMath.NuSlerp(baseWeight, Load(others), others.Select(m => parameters.Number("weight", m.Entry, name, d)).ToList(),
                    parameters.Flag("nuslerp_row_wise", name, d), parameters.Flag("nuslerp_flatten", name, d));
            case MergeKind.MultiSlerp:
                if (others.Count == 0) return baseWeight!.alias();
                return MergeMath.MultiSlerp(Load(others), others.Select(m => parameters.Number("weight", m.Entry, name, d)).ToList(), baseWeight,
                    parameters.Flag("normalize_weights", name, d), parameters.Number("eps", null, name, d), name);
            case MergeKind.Karcher:
                // as mergekit, the base model (when given) is one more point of the mean, with the same weight as the others
                var points = Load(others);
                if (baseWeight is not null) points.Insert(0, baseWeight);
                return MergeMath.Karcher(points, (int)parameters.Number("max_iter", null, name, d), parameters.Number("tol", null, name, d));
            default:
                throw new InvalidOperationException(method.Kind.ToString());
        }
    }

    Tensor Linear(string name, double d, ScalarType compute)
    {
        var models = inputs.Models.Where(m => m.Source.Contains(name)).ToList();
        var weights = models.Select(m => parameters.Number("weight", m.Entry, name, d)).ToList();
        Tensor? sum = null;
        for (int i = 0; i < models.Count; i++)   // one model's tensor at a time
        {
            var term = models[i].Source.Load(name).to(compute).mul_(weights[i]);
            if (sum is null) sum = term;
            else { sum.add_(term); term.Dispose(); }
        }
        if (!parameters.Flag("normalize", name, d)) return sum!;
        double total = weights.Sum();
        if (Math.Abs(total) < 1e-8)
            throw new MergeException($"tensor '{name}': the weights sum to {total}, so linear cannot normalise by them; set normalize: false");
        return sum!.div_(total);
    }

    // LiNeS on top of a method that returns whole weights: scale its change from the base.
    Tensor WithLines(string name, Tensor? baseWeight, Tensor merged) =>
        lines is null ? merged : baseWeight! + (merged - baseWeight!) * MergeMath.LinesFactor(depth.LinesOf(name), lines.Alpha, lines.Beta);

    // One random stream per (seed, tensor, model): results do not depend on the order tensors are visited in.
    ulong Seed(string name, int model)
    {
        ulong h = 14695981039346656037UL ^ (ulong)seed;
        foreach (var c in name) h = (h ^ c) * 1099511628211UL;
        return (h ^ (ulong)model) * 1099511628211UL;
    }
}
