using PeftSharp.Peft;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Lora;

public sealed class LoraTuner : ITuner
{
    public string PeftType => "LORA";
    public Type ConfigType => typeof(LoraConfig);

    public IReadOnlySet<string> KnownUnusedKeys { get; } = new HashSet<string>
    {
        "alora_invocation_tokens", "arrow_config", "auto_mapping", "corda_config", "ensure_weight_tying", "eva_config",
        "layer_replication", "loftq_config", "lora_ga_config", "megatron_config", "megatron_core", "monteclora_config",
        "qalora_group_size", "target_parameters", "trainable_token_indices", "use_bdlora", "use_qalora", "velora_config",
        "kasa_config", "runtime_config",
    };

    // PiSSA/OLoRA rewrite the base weight at init; a saved adapter already has its weights.
    public PeftConfig ForLoading(PeftConfig config) => (LoraConfig)config with { InitLoraWeights = "true" };

    public void Inject(PeftModel model, string name, PeftConfig config)
    {
        var c = (LoraConfig)config;
        if (c.Bias is not ("none" or "all" or "lora_only")) throw new ArgumentException($"bias '{c.Bias}' must be none, all or lora_only");
        LayerInjection.Inject(model, c, (path, module) =>
        {
            var layer = module as LoraLayer;
            var wrapper = layer is null ? new LoraLayer(module as nn.Module<Tensor, Tensor>
                ?? throw new NotSupportedException($"module '{path}' ({module.GetType().Name}) cannot be wrapped by LoRA")) : null;
            (layer ?? wrapper)!.AddAdapter(name, c.RankFor(path), c.ScalingFor(path), c);
            return wrapper;
        });
    }
}
