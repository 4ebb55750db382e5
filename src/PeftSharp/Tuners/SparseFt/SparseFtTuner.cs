using PeftSharp.Peft;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.SparseFt;

/// <summary>
/// Sparse fine-tuning (<see cref="SparseFtConfig"/>): wraps each target in a <see cref="SparseFtLayer"/> whose support
/// the config's method chooses; training runs the method's schedule (<see cref="SparseFtHooks"/>).
/// </summary>
public sealed class SparseFtTuner : ITuner
{
    public string PeftType => SparseFtConfig.Type;
    public Type ConfigType => typeof(SparseFtConfig);
    public IReadOnlySet<string> KnownUnusedKeys { get; } = new HashSet<string>();

    public IReadOnlyList<MethodPreset> Presets { get; } = SparseMethods.All.Select(m => new MethodPreset(m.Name, s => new SparseFtConfig
    {
        Method = m.Name, Density = s.Density, ReselectionSteps = s.ReselectionSteps, TotalSteps = s.TotalSteps,
        RandomSeed = s.Seed, TargetModules = s.Targets, TaskType = s.TaskType,
    })).ToList();

    public void Inject(PeftModel model, string name, PeftConfig config)
    {
        var c = (SparseFtConfig)config;
        if (!(c.Density > 0 && c.Density <= 1)) throw new ArgumentException($"sparse fine-tuning density must be in (0, 1], got {c.Density}");
        if (c.ReselectionSteps < 0) throw new ArgumentException($"reselection_steps must be 0 (never) or positive, got {c.ReselectionSteps}");
        var method = SparseMethods.Get(c.Method);
        var layers = Wrap(model, c);
        int ordinal = 0;
        foreach (var (path, layer) in layers)
        {
            var target = new SparseTarget(path, layer, name, ordinal, SparseWeightDelta.Budget(c.Density, layer.Weight.numel())) { Model = model.Base.Config };
            var budget = method.Budget(target, c);
            using var scope = NewDisposeScope();
            using var _ = no_grad();
            // Loaded indices replace these; distinct placeholders spare the method's work (an SVD for LIFT).
            var support = c.Loading ? arange(budget, dtype: ScalarType.Int64)
                : method.InitialSupport(target with { Budget = budget }, c);
            CheckSupport(support, budget, layer, c.Method);
            layer.AddAdapter(name, support, SparseFormat.SparseFt, randomValues: !c.InitWeights);
            ordinal++;
        }
    }

    public PeftConfig ForLoading(PeftConfig config) => (SparseFtConfig)config with { Loading = true };

    /// <summary>Wraps the targets (or adds to their wrappers), returning each sparse layer with its path, in model order.</summary>
    internal static List<(string Path, SparseFtLayer Layer)> Wrap(PeftModel model, LayerTunerConfig c)
    {
        var layers = new List<(string, SparseFtLayer)>();
        LayerInjection.Inject(model, c, (path, module) =>
        {
            var existing = module as SparseFtLayer;
            if (module is ITunerLayer and not SparseFtLayer)
                throw new NotSupportedException($"'{path}' already has an adapter of another method ({module.GetType().Name}); sparse deltas stack only with sparse deltas");
            var layer = existing ?? new SparseFtLayer(module as nn.Module<Tensor, Tensor>
                ?? throw new NotSupportedException($"sparse fine-tuning cannot wrap '{path}' ({module.GetType().Name})"));
            layers.Add((path, layer));
            return existing is null ? layer : null;
        });
        return layers;
    }

    static void CheckSupport(Tensor support, long budget, SparseFtLayer layer, string method)
    {
        if (support.shape.Length != 1 || support.shape[0] != budget || support.unique().Item1.shape[0] != budget)
            throw new InvalidOperationException($"sparse method '{method}' chose {AdapterTensors.Shape(support)} indices for a weight " +
                $"{AdapterTensors.Shape(layer.Weight)}; it must choose exactly {budget} distinct ones");
    }

    /// <summary>The adapter's targets, in model order.</summary>
    public static List<SparseTarget> Targets(PeftModel model, string adapter) =>
        model.TunerLayers().Where(x => x.Layer is SparseFtLayer && x.Layer.AdapterNames.Contains(adapter))
            .Select((x, i) => new SparseTarget(x.Path, (SparseFtLayer)x.Layer, adapter, i, ((SparseFtLayer)x.Layer).Delta(adapter).K)).ToList();

    public ITrainingHooks? TrainingHooks(PeftModel model, string adapter)
    {
        var c = (SparseFtConfig)model.Configs[adapter];
        var targets = Targets(model, adapter);
        return SparseMethods.Get(c.Method).Schedule(targets, c) is { } schedule ? new SparseFtHooks(adapter, targets, schedule) : null;
    }
}
