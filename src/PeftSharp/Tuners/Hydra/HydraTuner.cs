using PeftSharp.Peft;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Hydra;

public sealed class HydraTuner : ITuner
{
    public string PeftType => "HYDRA";
    public Type ConfigType => typeof(HydraConfig);
    public IReadOnlySet<string> KnownUnusedKeys { get; } = new HashSet<string>();

    public IReadOnlyList<MethodPreset> Presets { get; } =
    [
        new("hydra", s => new HydraConfig
        {
            R = s.R, LoraAlpha = s.Alpha, LoraDropout = s.Dropout, TargetModules = s.Targets, TaskType = s.TaskType, BaseModelNameOrPath = s.BaseModel,
        }),
    ];

    public void Inject(PeftModel model, string name, PeftConfig config)
    {
        var c = (HydraConfig)config;
        if (c.Bias != "none") throw new NotSupportedException($"Hydra bias '{c.Bias}' is not supported; use \"none\"");
        LayerInjection.Inject(model, c, (path, module) =>
        {
            var existing = module as HydraLayer;
            var layer = existing ?? new HydraLayer(module as nn.Module<Tensor, Tensor>
                ?? throw new NotSupportedException($"module '{path}' ({module.GetType().Name}) cannot be wrapped by Hydra"));
            layer.AddAdapter(name, c);
            return existing is null ? layer : null;
        });
    }
}
