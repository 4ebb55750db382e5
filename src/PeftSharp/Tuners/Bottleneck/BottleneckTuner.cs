using PeftSharp.Peft;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Bottleneck;

public sealed class BottleneckTuner : ITuner
{
    public string PeftType => "BOTTLENECK_ADAPTER";
    public Type ConfigType => typeof(BottleneckConfig);
    public IReadOnlySet<string> KnownUnusedKeys { get; } = new HashSet<string>();

    public IReadOnlyList<MethodPreset> Presets { get; } =
    [
        new("bottleneck", s => new BottleneckConfig { AdapterType = "sequential", TaskType = s.TaskType }),
        new("parallel_adapter", s => new BottleneckConfig { AdapterType = "parallel", Scaling = 4.0, TaskType = s.TaskType }),
    ];

    public void Inject(PeftModel model, string name, PeftConfig config)
    {
        var c = (BottleneckConfig)config;
        if (c.AdapterType is not ("sequential" or "parallel"))
            throw new ArgumentException($"BOTTLENECK_ADAPTER: adapter_type '{c.AdapterType}' is not sequential or parallel");
        if (c.NonLinearity is not ("relu" or "gelu" or "silu"))
            throw new ArgumentException($"BOTTLENECK_ADAPTER: non_linearity '{c.NonLinearity}' is not relu, gelu or silu");
        if (c.ReductionFactor <= 0) throw new ArgumentException($"BOTTLENECK_ADAPTER: reduction_factor must be positive, got {c.ReductionFactor}");
        var m = model.Base;
        if (c.TargetModules is null)
            c = c with { TargetModules = ModuleSelector.Pattern(BottleneckConfig.PlacementPattern(m.Config.ModelType, c.Placement)) };
        var device = m.Device;
        LayerInjection.Inject(model, c, (path, module) =>
        {
            if (module is BottleneckLayer existing) { existing.AddAdapter(name, c, device); return null; }
            var f = module as nn.Module<Tensor, Tensor>
                ?? throw new NotSupportedException($"a bottleneck adapter cannot wrap '{path}' ({module.GetType().Name}): its forward is not a tensor -> tensor map");
            // Linear-like layers say their sizes; blocks such as the MLP map hidden states to hidden states.
            var (fIn, fOut) = BaseLayers.IsLinear(f) ? BaseLayers.Features(f) : (m.Config.HiddenSize, m.Config.HiddenSize);
            var layer = new BottleneckLayer(f, fIn, fOut);
            layer.AddAdapter(name, c, device);
            return layer;
        });
    }
}
