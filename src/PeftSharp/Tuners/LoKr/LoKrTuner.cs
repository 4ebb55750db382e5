using PeftSharp.Peft;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.LoKr;

public sealed class LoKrTuner : ITuner
{
    public string PeftType => "LOKR";
    public Type ConfigType => typeof(LoKrConfig);
    public IReadOnlySet<string> KnownUnusedKeys { get; } = new HashSet<string> { "auto_mapping" };

    public IReadOnlyList<MethodPreset> Presets { get; } =
        [new("lokr", s => new LoKrConfig { R = s.R, Alpha = s.Alpha, TargetModules = s.Targets, TaskType = s.TaskType })];

    public void Inject(PeftModel model, string name, PeftConfig config)
    {
        var c = (LoKrConfig)config;
        if (c.UseEffectiveConv2d) throw new NotSupportedException("use_effective_conv2d applies to Conv2d layers, which PeftSharp's models do not have; set it to false");
        LayerInjection.Inject(model, c, (path, module) =>
        {
            var existing = module as LoKrLayer;
            var layer = existing ?? new LoKrLayer(module as nn.Module<Tensor, Tensor>
                ?? throw new NotSupportedException($"module '{path}' ({module.GetType().Name}) cannot be wrapped by LoKr"));
            layer.AddAdapter(name, c.RankFor(path), c.AlphaFor(path), c);
            return existing is null ? layer : null;
        });
    }
}
