using PeftSharp.Peft;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.SparseFt.Dsee;

/// <summary>DSEE (<see cref="DseeConfig"/>): LoRA plus a sparse residual on the support of W's sparse component.</summary>
public sealed class DseeTuner : ITuner
{
    public string PeftType => DseeConfig.Type;
    public Type ConfigType => typeof(DseeConfig);
    public IReadOnlySet<string> KnownUnusedKeys { get; } = new HashSet<string>();

    public IReadOnlyList<MethodPreset> Presets { get; } =
    [
        new("dsee", s => new DseeConfig
        {
            R = s.R, LoraAlpha = s.Alpha, LoraDropout = s.Dropout, Density = s.Density, TargetModules = s.AttentionOrTargets, TaskType = s.TaskType,
        }),
    ];

    public PeftConfig ForLoading(PeftConfig config) => (DseeConfig)config with { Loading = true };

    public void Inject(PeftModel model, string name, PeftConfig config)
    {
        var c = (DseeConfig)config;
        if (c.R <= 0) throw new ArgumentException($"DSEE's r must be positive, got {c.R}");
        if (!(c.Density > 0 && c.Density <= 1)) throw new ArgumentException($"DSEE's density must be in (0, 1], got {c.Density}");
        if (c.DecompositionRank < 1 || c.DecompositionIterations < 1)
            throw new ArgumentException($"DSEE's decomposition_rank and decomposition_iterations must be at least 1, got {c.DecompositionRank} and {c.DecompositionIterations}");
        LayerInjection.Inject(model, c, (path, module) =>
        {
            var existing = module as DseeLayer;
            if (module is ITunerLayer and not DseeLayer)
                throw new NotSupportedException($"'{path}' already has an adapter of another method ({module.GetType().Name}); DSEE adapters stack only with DSEE adapters");
            var layer = existing ?? new DseeLayer(module as nn.Module<Tensor, Tensor>
                ?? throw new NotSupportedException($"DSEE cannot wrap '{path}' ({module.GetType().Name})"));
            if (layer.BaseLayer is not TorchSharp.Modules.Linear)
                throw new NotSupportedException($"DSEE wraps Linear layers, not {layer.BaseLayer.GetType().Name} at '{path}'");
            var budget = SparseWeightDelta.Budget(c.Density, layer.Weight.numel());
            using var scope = NewDisposeScope();
            var support = c.Loading ? arange(budget, dtype: ScalarType.Int64)
                : DseeDecomposition.SparseSupport(layer.Weight, c.DecompositionRank, budget, c.DecompositionIterations);
            layer.AddAdapter(name, c, support);
            return existing is null ? layer : null;
        });
    }
}
