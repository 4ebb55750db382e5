using PeftSharp.Peft;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.IncreLora;

public sealed class IncreLoraTuner : ITuner
{
    public string PeftType => "INCRELORA";
    public Type ConfigType => typeof(IncreLoraConfig);
    public IReadOnlySet<string> KnownUnusedKeys { get; } = new HashSet<string>();

    // The authors' settings: rank 1 to start, alpha 32 at target 8 (here the run's alpha), orthogonality weight 0.1;
    // the first increase after a tenth of the run, the rest spread evenly up to its middle.
    public IReadOnlyList<MethodPreset> Presets { get; } =
    [
        new("increlora", s => new IncreLoraConfig
        {
            InitR = 1, TargetR = s.R, LoraAlpha = s.Alpha, LoraDropout = s.Dropout, TargetModules = s.Targets, TaskType = s.TaskType,
            BaseModelNameOrPath = s.BaseModel, TotalStep = s.TotalSteps, Tinit = s.TotalSteps / 10,
        }),
    ];

    /// <summary>The rank increaser (after each step) and the orthogonality penalty (in the loss).</summary>
    public ITrainingHooks? TrainingHooks(PeftModel model, string adapter) => new Hooks(new RankIncreaser(model, adapter));

    sealed class Hooks(RankIncreaser increaser) : ITrainingHooks
    {
        public Tensor ExtraLoss(PeftModel model) => increaser.OrthogonalRegularization(model);
        public void AfterOptimizerStep(PeftModel model, int step) => increaser.UpdateAndIncrease(model, step);
        public bool ChangesParameterSet => true;
        public Dictionary<string, Tensor> CheckpointState(PeftModel model) => increaser.CheckpointState(model);
        public void RestoreCheckpointState(PeftModel model, IReadOnlyDictionary<string, Tensor> state, string source) =>
            increaser.RestoreCheckpointState(model, state, source);
    }

    public void Inject(PeftModel model, string name, PeftConfig config)
    {
        var c = (IncreLoraConfig)config;
        if (c.Bias != "none") throw new NotSupportedException($"IncreLoRA bias '{c.Bias}' is not supported; use \"none\"");
        LayerInjection.Inject(model, c, (path, module) =>
        {
            var existing = module as IncreLoraLayer;
            var layer = existing ?? new IncreLoraLayer(module as nn.Module<Tensor, Tensor>
                ?? throw new NotSupportedException($"module '{path}' ({module.GetType().Name}) cannot be wrapped by IncreLoRA"));
            layer.AddAdapter(name, c.InitR, c);
            return existing is null ? layer : null;
        });
    }

    /// <summary>
    /// Saved as a plain PEFT LoRA, which any PEFT loads: per module A = Λ ⊙ Q, B = P × (alpha / r) / (lora_alpha / r)
    /// with r in <c>rank_pattern</c>, so (lora_alpha / r) B A is the trained delta.
    /// </summary>
    public PeftConfig BeforeSave(PeftModel model, string adapter, PeftConfig config, Dictionary<string, Tensor> tensors, bool convertToLora)
    {
        var c = (IncreLoraConfig)config;
        var ranks = new Dictionary<string, double>();
        using var _ = no_grad();
        foreach (var (path, tunerLayer) in model.TunerLayers())
        {
            if (tunerLayer is not IncreLoraLayer layer || !layer.Book.Names.Contains(adapter)) continue;
            var key = $"base_model.model.{path}.";
            int r = layer.Rank(adapter);
            double loraScaling = c.LoraAlpha / r;
            foreach (var part in new[] { "lora_A", "lora_B", "lora_E" }) tensors.Remove(key + part);
            tensors[key + "lora_A.weight"] = layer.A(adapter).detach() * layer.E(adapter).detach();
            tensors[key + "lora_B.weight"] = layer.B(adapter).detach() * (layer.Scale(adapter) / loraScaling);
            ranks[path] = r;
        }
        return new LoraConfig
        {
            R = c.InitR, LoraAlpha = c.LoraAlpha, LoraDropout = c.LoraDropout, FanInFanOut = c.FanInFanOut, RankPattern = ranks,
            TargetModules = c.TargetModules, ExcludeModules = c.ExcludeModules, LayersToTransform = c.LayersToTransform,
            LayersPattern = c.LayersPattern, ModulesToSave = c.ModulesToSave, TaskType = c.TaskType,
            BaseModelNameOrPath = c.BaseModelNameOrPath, Revision = c.Revision, InferenceMode = c.InferenceMode,
        };
    }
}
