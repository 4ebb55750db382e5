using PeftSharp.Peft;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Miss;

public sealed class MissTuner : ITuner
{
    public string PeftType => "MISS";
    public Type ConfigType => typeof(MissConfig);
    public IReadOnlySet<string> KnownUnusedKeys { get; } = new HashSet<string> { "auto_mapping" };

    // "bone" is MiSS's earlier name (PEFT's BONE), kept as an alias.
    public IReadOnlyList<MethodPreset> Presets { get; } = [new("miss", Miss), new("bone", Miss)];

    static MissConfig Miss(PresetSettings s) =>
        new() { R = Math.Min(64, s.Model.HiddenSize / 4), TargetModules = s.AttentionOrTargets, TaskType = s.TaskType };

    public void Inject(PeftModel model, string name, PeftConfig config)
    {
        var c = (MissConfig)config;
        if (c.Bias != "none") throw new NotSupportedException($"MiSS bias '{c.Bias}' is not supported; use \"none\"");
        LayerInjection.Inject(model, c, (path, module) =>
        {
            var existing = module as MissLayer;
            var layer = existing ?? new MissLayer(module as nn.Module<Tensor, Tensor>
                ?? throw new NotSupportedException($"module '{path}' ({module.GetType().Name}) cannot be wrapped by MiSS"));
            layer.AddAdapter(name, c);
            return existing is null ? layer : null;
        });
    }
}
