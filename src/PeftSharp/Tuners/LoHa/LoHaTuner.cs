using PeftSharp.Peft;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.LoHa;

public sealed class LoHaTuner : ITuner
{
    public string PeftType => "LOHA";
    public Type ConfigType => typeof(LoHaConfig);
    public IReadOnlySet<string> KnownUnusedKeys { get; } = new HashSet<string> { "auto_mapping" };

    public IReadOnlyList<MethodPreset> Presets { get; } =
        [new("loha", s => new LoHaConfig { R = s.R, Alpha = s.Alpha, TargetModules = s.Targets, TaskType = s.TaskType })];

    public void Inject(PeftModel model, string name, PeftConfig config)
    {
        var c = (LoHaConfig)config;
        if (c.UseEffectiveConv2d) throw new NotSupportedException("use_effective_conv2d applies to Conv2d layers, which PeftSharp's models do not have; set it to false");
        LayerInjection.Inject(model, c, (path, module) =>
        {
            var existing = module as LoHaLayer;
            var layer = existing ?? new LoHaLayer(module as nn.Module<Tensor, Tensor>
                ?? throw new NotSupportedException($"module '{path}' ({module.GetType().Name}) cannot be wrapped by LoHa"));
            layer.AddAdapter(name, c.RankFor(path), c.AlphaFor(path), c);
            return existing is null ? layer : null;
        });
    }
}
