using PeftSharp.Peft;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Vera;

public sealed class VeraTuner : ITuner
{
    public string PeftType => "VERA";
    public Type ConfigType => typeof(VeraConfig);
    public IReadOnlySet<string> KnownUnusedKeys { get; } = new HashSet<string> { "auto_mapping" };

    // VeRA's vectors are cheap and its shared projections need rank: at least 64, on the attention projections.
    public IReadOnlyList<MethodPreset> Presets { get; } =
        [new("vera", s => new VeraConfig { R = Math.Max(s.R, 64), TargetModules = s.AttentionOrTargets, TaskType = s.TaskType })];

    public void Inject(PeftModel model, string name, PeftConfig config)
    {
        var c = (VeraConfig)config;
        if (c.Bias != "none") throw new NotSupportedException($"VeRA bias '{c.Bias}' is not supported; use \"none\"");
        if (c.R <= 0) throw new ArgumentException($"VeRA rank must be positive, got {c.R}");
        foreach (var other in model.Configs.Values.OfType<VeraConfig>())
            if (other.ProjectionPrngKey != c.ProjectionPrngKey || other.SaveProjection != c.SaveProjection)
                throw new ArgumentException("VeRA adapters on one model must share projection_prng_key and save_projection " +
                    $"(existing: {other.ProjectionPrngKey}/{other.SaveProjection}, new: {c.ProjectionPrngKey}/{c.SaveProjection})");
        // The shared projections are sized for the largest target, so wrap first and add the adapter after.
        var layers = new List<VeraLayer>();
        LayerInjection.Inject(model, c, (path, module) =>
        {
            var existing = module as VeraLayer;
            var layer = existing ?? new VeraLayer(module as nn.Module<Tensor, Tensor>
                ?? throw new NotSupportedException($"module '{path}' ({module.GetType().Name}) cannot be wrapped by VeRA"));
            layers.Add(layer);
            return existing is null ? layer : null;
        });
        var device = BaseLayers.Weight(layers[0].BaseLayer).device;
        var projections = VeraProjections.Generate(c.R, layers.Max(l => l.InFeatures), layers.Max(l => l.OutFeatures),
            c.ProjectionPrngKey, device, c.SaveProjection);
        foreach (var layer in layers) layer.AddAdapter(name, projections, c);
        model.RegisterExtras(name, projections);
    }
}
