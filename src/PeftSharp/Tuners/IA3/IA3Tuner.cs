using PeftSharp.Peft;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.IA3;

public sealed class IA3Tuner : ITuner
{
    public string PeftType => "IA3";
    public Type ConfigType => typeof(IA3Config);
    public IReadOnlySet<string> KnownUnusedKeys { get; } = new HashSet<string> { "auto_mapping" };

    public IReadOnlyList<MethodPreset> Presets { get; } = [new("ia3", s => For(s.Model.ModelType) with { TaskType = s.TaskType })];

    // PEFT's defaults: keys, values and the feed-forward down projection (whose input is scaled).
    static IA3Config For(string modelType) => modelType switch
    {
        "gpt2" => new IA3Config { TargetModules = ["c_attn", "mlp.c_proj"], FeedforwardModules = ["mlp.c_proj"], FanInFanOut = true },
        "bert" => new IA3Config { TargetModules = ["key", "value", "output.dense"], FeedforwardModules = ["output.dense"] },
        "phi3" => new IA3Config { TargetModules = ["qkv_proj", "down_proj"], FeedforwardModules = ["down_proj"] },
        // PEFT's TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING: these families scale q, not k.
        "qwen3" or "gemma2" or "gemma3_text" => new IA3Config { TargetModules = ["q_proj", "v_proj", "down_proj"], FeedforwardModules = ["down_proj"] },
        _ => new IA3Config { TargetModules = ["k_proj", "v_proj", "down_proj"], FeedforwardModules = ["down_proj"] },
    };

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
