using PeftSharp.Peft;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Poly;

public sealed class PolyTuner : ITuner
{
    public string PeftType => "POLY";
    public Type ConfigType => typeof(PolyConfig);
    public IReadOnlySet<string> KnownUnusedKeys { get; } = new HashSet<string> { "auto_mapping" };

    // The task count comes from the data, which a preset cannot see: give n_tasks in an --adapter-config when above 8.
    public IReadOnlyList<MethodPreset> Presets { get; } =
    [
        new("poly", s => new PolyConfig { R = s.R, NTasks = 8, NSkills = 4, NSplits = 1, TargetModules = s.AttentionOrTargets, TaskType = s.TaskType }),
        new("mhr", s => new PolyConfig { R = s.R, NTasks = 8, NSkills = 4, NSplits = 4, TargetModules = s.AttentionOrTargets, TaskType = s.TaskType }),
    ];

    public void Inject(PeftModel model, string name, PeftConfig config)
    {
        var c = (PolyConfig)config;
        LayerInjection.Inject(model, c, (path, module) =>
        {
            var existing = module as PolyLayer;
            var layer = existing ?? new PolyLayer(module as nn.Module<Tensor, Tensor>
                ?? throw new NotSupportedException($"module '{path}' ({module.GetType().Name}) cannot be wrapped by Poly"), model.Routing);
            layer.AddAdapter(name, c);
            return existing is null ? layer : null;
        });
    }
}
