using PeftSharp.Peft;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.BitFit;

public sealed class BitFitTuner : ITuner
{
    public string PeftType => "BITFIT";
    public Type ConfigType => typeof(BitFitConfig);
    public IReadOnlySet<string> KnownUnusedKeys { get; } = new HashSet<string>();

    public IReadOnlyList<MethodPreset> Presets { get; } = [new("bitfit", s => new BitFitConfig { TaskType = s.TaskType })];

    public void Inject(PeftModel model, string name, PeftConfig config)
    {
        var c = (BitFitConfig)config;
        var saved = (c.ModulesToSave ?? []).Concat(c.TaskType == "SEQ_CLS" ? ["classifier", "score"] : []).ToArray();
        // Every module is a candidate; those without a bias of their own are passed over.
        var all = c.TargetModules is null ? c with { TargetModules = ModuleSelector.Pattern(".*") } : c;
        int adapted = 0;
        LayerInjection.Inject(model, all, (path, module) =>
        {
            if (module is BitFitLayer existing) { existing.AddAdapter(name); adapted++; return null; }
            var parts = path.Split('.');
            if (parts.Any(p => p is "modules_to_save" or "original_module") || saved.Contains(parts[^1])) return null;
            if (BitFitLayer.BiasOf(module) is null) return null;
            var layer = new BitFitLayer((nn.Module<Tensor, Tensor>)module);
            layer.AddAdapter(name);
            adapted++;
            return layer;
        });
        if (adapted == 0)
        {
            var m = model.Base.Config;
            throw new NotSupportedException(c.TargetModules is null
                ? $"BitFit trains bias terms only, and {m.Architecture} (model_type {m.ModelType}) has none: its linear and norm layers are " +
                  "bias-free, so there is nothing to train. Use a model with biases (GPT-2, BERT) or another method (LoRA, IA3, LN tuning)."
                : $"BitFit: target_modules {c.TargetModules} matched no module with a bias in {m.Architecture}");
        }
    }
}
