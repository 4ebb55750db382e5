using PeftSharp.Peft;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Lora;

public sealed class LoraTuner : ITuner
{
    public string PeftType => "LORA";
    public Type ConfigType => typeof(LoraConfig);

    public IReadOnlySet<string> KnownUnusedKeys => LoraKeys.Unused;
    public IReadOnlySet<string> UnsupportedKeys => LoraKeys.Unsupported;

    public IReadOnlyList<MethodPreset> Presets { get; } =
    [
        new("lora", Lora),
        new("dora", s => Lora(s) with { UseDora = true }),
        new("rslora", s => Lora(s) with { UseRslora = true }),
        new("pissa", s => Lora(s) with { InitLoraWeights = "pissa_niter_4" }),
        new("olora", s => Lora(s) with { InitLoraWeights = "olora" }),
        new("lora-orthogonal", s => Lora(s) with { InitLoraWeights = "orthogonal" }),
        new("eva", s => Lora(s) with { InitLoraWeights = "eva", EvaConfig = new EvaConfig() }),
        new("corda", s => Lora(s) with { InitLoraWeights = "corda", CordaConfig = new CordaConfig() }),
        new("corda-kpm", s => Lora(s) with { InitLoraWeights = "corda", CordaConfig = new CordaConfig { CordaMethod = "kpm" } }),
        new("lora-ga", s => Lora(s) with { InitLoraWeights = "lora_ga", LoraGaConfig = new LoraGaConfig() }),
    ];

    static LoraConfig Lora(PresetSettings s) => new()
    {
        R = s.R, LoraAlpha = s.Alpha, LoraDropout = s.Dropout, UseRslora = s.UseRslora, UseDora = s.UseDora,
        TargetModules = s.Targets, TaskType = s.TaskType, BaseModelNameOrPath = s.BaseModel,
    };

    // bias="all" trains every bias of the base, "lora_only" those of wrapped layers (PEFT's LoRA bias option).
    public IEnumerable<(string Name, Parameter P)> TrainedBaseParameters(PeftModel model, PeftConfig config)
    {
        if (config is not LoraConfig { Bias: "all" or "lora_only" } c) yield break;
        foreach (var (name, p) in model.Base.named_parameters())
        {
            if (!name.EndsWith(".bias", StringComparison.Ordinal) || name.Contains(".lora_", StringComparison.Ordinal)) continue;
            if (name.Contains(".modules_to_save.", StringComparison.Ordinal)) continue;
            if (c.Bias == "lora_only" && !name.EndsWith(".base_layer.bias", StringComparison.Ordinal)) continue;
            yield return (name, p);
        }
    }

    public PeftConfig BeforeSave(PeftModel model, string adapter, PeftConfig config, Dictionary<string, Tensor> tensors, bool convertToLora)
    {
        if (config is not LoraConfig { InitLoraWeights: var init } c) return config;
        if (init == "eva") return Eva.ForSave(model, adapter, c);
        // CorDA and LoRA-GA changed the base, whose residual PeftSharp never writes: their adapters are always saved as a
        // plain LoRA of the original base (PEFT asks for path_initial_model_for_weight_conversion to do the same).
        if (init is "corda" or "lora_ga")
            return LoraConversion.Recorded(model, adapter) ? LoraConversion.ToPlainLora(model, adapter, c, tensors) with { CordaConfig = null, LoraGaConfig = null } : c;
        return convertToLora && (init.StartsWith("pissa", StringComparison.Ordinal) || init == "olora")
            ? LoraConversion.ToPlainLora(model, adapter, c, tensors)
            : config;
    }

    public bool NeedsCalibration(PeftConfig config) => config is LoraConfig { InitLoraWeights: "eva" or "corda" or "lora_ga" };

    public void Calibrate(PeftModel model, string adapter, CalibrationData data)
    {
        var c = (LoraConfig)model.Configs[adapter];
        switch (c.InitLoraWeights)
        {
            case "eva": Eva.Calibrate(model, adapter, c, data); break;
            case "corda": Corda.Calibrate(model, adapter, c, data); break;
            case "lora_ga": LoraGa.Calibrate(model, adapter, c, data); break;
        }
    }

    // PiSSA/OLoRA rewrite the base weight at init; a saved adapter already has its weights.
    public PeftConfig ForLoading(PeftConfig config) => (LoraConfig)config with { InitLoraWeights = "true" };

    // DoRA re-normalises W + s B A, so its update is not s B A: the low-rank optimizers' algebra does not hold there.
    public IEnumerable<LowRankFactors> LowRankFactors(PeftModel model, string adapter)
    {
        foreach (var (path, layer) in model.TunerLayers())
        {
            if (layer is not LoraLayer lora || !layer.AdapterNames.Contains(adapter) || lora.UsesDora(adapter)) continue;
            var prefix = path.Length == 0 ? "" : path + ".";
            yield return lora.Kind == BaseKind.Embedding
                ? new LowRankFactors($"{prefix}lora_embedding_A.{adapter}", $"{prefix}lora_embedding_B.{adapter}", lora.Scaling(adapter), Embedding: true)
                : new LowRankFactors($"{prefix}lora_A.{adapter}.weight", $"{prefix}lora_B.{adapter}.weight", lora.Scaling(adapter), Embedding: false);
        }
    }

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
