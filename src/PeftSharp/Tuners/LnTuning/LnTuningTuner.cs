using PeftSharp.Peft;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.LnTuning;

public sealed class LnTuningTuner : ITuner
{
    public string PeftType => "LN_TUNING";
    public Type ConfigType => typeof(LnTuningConfig);
    public IReadOnlySet<string> KnownUnusedKeys { get; } = new HashSet<string> { "auto_mapping" };

    public IReadOnlyList<MethodPreset> Presets { get; } = [new("ln_tuning", s => new LnTuningConfig { TaskType = s.TaskType })];

    public void Inject(PeftModel model, string name, PeftConfig config)
    {
        var c = (LnTuningConfig)config;
        var type = model.Base.Config.ModelType;
        if (c.TargetModules is null)
        {
            var defaults = LnTuningConfig.DefaultTargets(type)
                ?? throw new ArgumentException($"LN_TUNING has no default target_modules for model_type '{type}'; set target_modules to its norm layers");
            c = c with { TargetModules = ModuleSelector.Of(defaults) };
        }
        LayerInjection.Inject(model, c, (path, module) =>
        {
            if (module is LnTuningLayer existing) { existing.AddAdapter(name); return null; }
            if (module is not (TorchSharp.Modules.LayerNorm or Models.Layers.RmsNorm or Models.Layers.GemmaRmsNorm))
                throw new NotSupportedException($"LN tuning trains norm layers, but '{path}' is a {module.GetType().Name}: " +
                    "target LayerNorm/RMSNorm modules only (e.g. input_layernorm, post_attention_layernorm, norm, ln_1, ln_f)");
            var layer = new LnTuningLayer((nn.Module<Tensor, Tensor>)module);
            layer.AddAdapter(name);
            return layer;
        });
    }
}
