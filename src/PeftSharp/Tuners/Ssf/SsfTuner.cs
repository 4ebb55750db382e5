using PeftSharp.Peft;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Ssf;

public sealed class SsfTuner : ITuner
{
    public string PeftType => "SSF";
    public Type ConfigType => typeof(SsfConfig);
    public IReadOnlySet<string> KnownUnusedKeys { get; } = new HashSet<string>();

    // "all-linear" here means every projection, including GPT-2's Conv1D and BERT's attention layers.
    public IReadOnlyList<MethodPreset> Presets { get; } =
    [
        new("ssf", s => new SsfConfig
        {
            TargetModules = s.AllLinear ? ModuleSelector.Pattern(".*_proj|.*c_attn|.*c_fc|.*c_proj|.*dense|query|key|value") : s.Targets,
            TaskType = s.TaskType,
        }),
    ];

    public void Inject(PeftModel model, string name, PeftConfig config)
    {
        var c = (SsfConfig)config;
        var device = model.Base.Device;
        LayerInjection.Inject(model, c, (path, module) =>
        {
            if (module is SsfLayer existing) { existing.AddAdapter(name, device); return null; }
            // Modules without a weight of their own (an MLP block) output hidden-size features.
            var layer = new SsfLayer(module as nn.Module<Tensor, Tensor>
                ?? throw new NotSupportedException($"SSF cannot wrap '{path}' ({module.GetType().Name}): its forward is not a tensor -> tensor map"),
                model.Base.Config.HiddenSize);
            layer.AddAdapter(name, device);
            return layer;
        });
    }
}
