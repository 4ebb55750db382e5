using PeftSharp.Peft;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.AdaLora;

public sealed class AdaLoraTuner : ITuner
{
    public string PeftType => "ADALORA";
    public Type ConfigType => typeof(AdaLoraConfig);

    // LoRA keys PEFT writes for AdaLoRA too (its config extends LoraConfig) that AdaLoRA does not use.
    public IReadOnlySet<string> KnownUnusedKeys => LoraKeys.Unused;
    public IReadOnlySet<string> UnsupportedKeys => LoraKeys.Unsupported;

    public IReadOnlyList<MethodPreset> Presets { get; } =
    [
        new("adalora", s => new AdaLoraConfig
        {
            InitR = Math.Max(s.R * 3 / 2, 2), TargetR = s.R, LoraAlpha = s.Alpha, TargetModules = s.AttentionOrTargets, TaskType = s.TaskType,
            TotalStep = s.TotalSteps, Tinit = s.TotalSteps / 10, Tfinal = s.TotalSteps / 5, DeltaT = 1,
        }),
    ];

    /// <summary>The rank allocator (pruning singular values on a budget schedule) and its orthogonality penalty.</summary>
    public ITrainingHooks? TrainingHooks(PeftModel model, string adapter) => new Hooks(new RankAllocator(model, adapter));

    sealed class Hooks(RankAllocator allocator) : ITrainingHooks
    {
        public Tensor ExtraLoss(PeftModel model) => allocator.OrthogonalRegularization(model);
        public void AfterOptimizerStep(PeftModel model, int step) => allocator.UpdateAndAllocate(model, step);
    }

    // PEFT sizes layers by rank_pattern only when loading saved weights (they hold only the kept singular values).
    public PeftConfig ForLoading(PeftConfig config) => (AdaLoraConfig)config with { SizeByRankPattern = true };

    public void Inject(PeftModel model, string name, PeftConfig config)
    {
        var c = (AdaLoraConfig)config;
        if (c.UseDora) throw new NotSupportedException("AdaLoRA does not support DoRA (use_dora), as in PEFT");
        if (c.Bias != "none") throw new NotSupportedException($"AdaLoRA bias '{c.Bias}' is not supported; use \"none\"");
        if (c.InitR <= 0) throw new ArgumentException($"init_r must be positive, got {c.InitR}");
        LayerInjection.Inject(model, c, (path, module) =>
        {
            var existing = module as AdaLoraLayer;
            var layer = existing ?? new AdaLoraLayer(module as nn.Module<Tensor, Tensor>
                ?? throw new NotSupportedException($"module '{path}' ({module.GetType().Name}) cannot be wrapped by AdaLoRA"));
            int r = c.InitR;
            if (c.SizeByRankPattern && c.RankMaskFor(path, name) is { } mask)
            {
                if (mask.Length != c.InitR)
                    throw new InvalidDataException($"rank_pattern for '{path}' has {mask.Length} entries but init_r is {c.InitR}");
                r = mask.Count(k => k);
            }
            layer.AddAdapter(name, r, rankNum: c.InitR, c);
            return existing is null ? layer : null;
        });
    }
}
