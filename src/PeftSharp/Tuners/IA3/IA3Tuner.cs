using PeftSharp.Peft;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.IA3;

public sealed class IA3Tuner : ITuner
{
    public string PeftType => "IA3";
    public Type ConfigType => typeof(IA3Config);
    public IReadOnlySet<string> KnownUnusedKeys { get; } = new HashSet<string> { "auto_mapping" };

    public void Inject(PeftModel model, string name, PeftConfig config)
    {
        var c = (IA3Config)config;
        if (c is { FeedforwardModules.Regex: null, TargetModules.Regex: null } && c.FeedforwardModules.Names.Except(c.TargetModules.Names).ToList() is { Count: > 0 } extra)
            throw new ArgumentException($"feedforward_modules must be a subset of target_modules; not targeted: {string.Join(", ", extra)}");
        LayerInjection.Inject(model, c, (path, module) =>
        {
            bool ff = c.IsFeedforward(path);
            if (module is IA3Layer existing)
            {
                if (existing.IsFeedforward != ff)
                    throw new ArgumentException($"'{path}' already holds (IA)^3 adapters that scale its {(existing.IsFeedforward ? "input" : "output")}; " +
                        $"adapter '{name}' would scale its {(ff ? "input" : "output")}: make feedforward_modules agree");
                existing.AddAdapter(name, c.InitIa3Weights);
                return null;
            }
            var layer = new IA3Layer(module as nn.Module<Tensor, Tensor>
                ?? throw new NotSupportedException($"module '{path}' ({module.GetType().Name}) cannot be wrapped by (IA)^3"), ff);
            layer.AddAdapter(name, c.InitIa3Weights);
            return layer;
        });
    }
}
