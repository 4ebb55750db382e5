using PeftSharp.Peft;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Loldu;

public sealed class LolduTuner : ITuner
{
    public string PeftType => "LOLDU";
    public Type ConfigType => typeof(LolduConfig);
    public IReadOnlySet<string> KnownUnusedKeys { get; } = new HashSet<string> { "auto_mapping" };

    public IReadOnlyList<MethodPreset> Presets { get; } =
    [
        new("loldu", s => new LolduConfig { R = s.R, Alpha = s.Alpha, LolduDropout = s.Dropout, TargetModules = s.Targets, TaskType = s.TaskType, BaseModelNameOrPath = s.BaseModel }),
    ];

    // Saved tensors replace the decomposition: skip it when loading.
    public PeftConfig ForLoading(PeftConfig config) => (LolduConfig)config with { InitWeights = false };

    public void Inject(PeftModel model, string name, PeftConfig config)
    {
        var c = (LolduConfig)config;
        LayerInjection.Inject(model, c, (path, module) =>
        {
            var existing = module as LolduLayer;
            var layer = existing ?? new LolduLayer(module as nn.Module<Tensor, Tensor>
                ?? throw new NotSupportedException($"module '{path}' ({module.GetType().Name}) cannot be wrapped by LoLDU"));
            layer.AddAdapter(name, c);
            return existing is null ? layer : null;
        });
    }
}
