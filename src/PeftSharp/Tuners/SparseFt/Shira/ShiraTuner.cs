using PeftSharp.Peft;
using PeftSharp.Tuners.SparseFt.Masks;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.SparseFt.Shira;

/// <summary>
/// PEFT's SHiRA on the sparse-delta layer: the mask is PEFT's <c>random_mask</c> (randperm of the weight's entries
/// from a generator seeded with <c>random_seed</c>, first r(out + in), as a row-major sorted set), the scaling 1.
/// </summary>
public sealed class ShiraTuner : ITuner
{
    /// <summary>torch.Generator()'s seed when none is set (c10's default_rng_seed_val).</summary>
    public const long DefaultGeneratorSeed = 67280421310721;

    public string PeftType => ShiraConfig.Type;
    public Type ConfigType => typeof(ShiraConfig);
    public IReadOnlySet<string> KnownUnusedKeys { get; } = new HashSet<string>();

    public IReadOnlyList<MethodPreset> Presets { get; } =
        [new("shira", s => new ShiraConfig { R = s.R, RandomSeed = s.Seed, TargetModules = s.Targets, TaskType = s.TaskType })];

    public void Inject(PeftModel model, string name, PeftConfig config)
    {
        var c = (ShiraConfig)config;
        if (c.MaskType != "random")
            throw new NotSupportedException($"SHiRA mask_type '{c.MaskType}' is not supported: only \"random\" (a custom mask_fn is Python code)");
        if (c.R <= 0) throw new ArgumentException($"SHiRA's r must be positive, got {c.R}");
        foreach (var (path, layer) in SparseFtTuner.Wrap(model, c))
        {
            if (layer.BaseLayer is not TorchSharp.Modules.Linear)
                throw new NotSupportedException($"SHiRA wraps Linear layers (as PEFT does), not {layer.BaseLayer.GetType().Name} at '{path}'");
            long k = c.R * (layer.InFeatures + layer.OutFeatures), numel = layer.Weight.numel();
            if (k > numel)
                throw new ArgumentException($"SHiRA's r = {c.R} asks for {k} entries of '{path}', which has only {numel}; use a smaller r");
            using var scope = NewDisposeScope();
            var support = RandomMaskMethod.RandomSupport(numel, k, c.RandomSeed ?? DefaultGeneratorSeed);
            layer.AddAdapter(name, support, SparseFormat.Shira, randomValues: !c.InitWeights);
        }
    }
}
