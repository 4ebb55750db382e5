using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.MixLora;

public sealed class MixLoraTuner : ITuner
{
    public string PeftType => "MIXLORA";
    public Type ConfigType => typeof(MixLoraConfig);
    public IReadOnlySet<string> KnownUnusedKeys { get; } = new HashSet<string> { "bias" };
    // MixLoRA's per-expert overrides and its own activation choice are not modelled: refused when set.
    public IReadOnlySet<string> UnsupportedKeys { get; } = new HashSet<string> { "expert_lora", "act_fn", "use_dora" };

    // The paper's setting: 8 experts, top-2; the run's --lora-* flags give r, alpha, dropout and targets.
    public IReadOnlyList<MethodPreset> Presets { get; } =
    [
        new("mixlora", s => new MixLoraConfig
        {
            R = s.R, LoraAlpha = s.Alpha, LoraDropout = s.Dropout, UseRslora = s.UseRslora, TargetModules = s.Targets, TaskType = s.TaskType,
            BaseModelNameOrPath = s.BaseModel,
        }),
    ];

    public void Inject(PeftModel model, string name, PeftConfig config)
    {
        var c = (MixLoraConfig)config;
        if (c.RoutingStrategy != "mixtral") throw new ArgumentException($"MixLoRA routing_strategy '{c.RoutingStrategy}' is not supported; use \"mixtral\"");
        if (c.R <= 0 || c.NumExperts <= 0 || c.TopK <= 0 || c.TopK > c.NumExperts)
            throw new ArgumentException($"MixLoRA needs r > 0 and 0 < top_k <= num_experts; got r={c.R}, top_k={c.TopK}, num_experts={c.NumExperts}");
        if (c.TargetModules is not { Regex: null } targets)
            throw new ArgumentException("MixLoRA target_modules must be a list of module names or \"all-linear\", not a regex");
        bool allLinear = targets.Names is ["all-linear"];
        var ffn = allLinear ? MixLoraMoe.Projections : MixLoraMoe.Projections.Intersect(targets.Names).ToArray();
        var attention = allLinear ? targets.Names.ToArray() : targets.Names.Except(MixLoraMoe.Projections).ToArray();
        if (ffn.Length == 0) throw new ArgumentException($"MixLoRA target_modules {targets} name no feed-forward projection ({string.Join(", ", MixLoraMoe.Projections)}) for the experts");

        // Attention first: once a feed-forward block is wrapped, its projections are no targets for LayerInjection.
        if (attention.Length > 0)
        {
            var lora = new LoraConfig
            {
                R = c.R, LoraAlpha = c.LoraAlpha, LoraDropout = c.LoraDropout, UseRslora = c.UseRslora,
                TargetModules = ModuleSelector.Of(attention), ExcludeModules = ModuleSelector.Of(MixLoraMoe.Projections),
                LayersToTransform = c.LayersToTransform, LayersPattern = c.LayersPattern,
            };
            double scale = c.UseRslora ? c.LoraAlpha / Math.Sqrt(c.R) : c.LoraAlpha / c.R;
            LayerInjection.Inject(model, lora, (path, module) =>
            {
                var existing = module as LoraLayer;
                var layer = existing ?? new LoraLayer(module as nn.Module<Tensor, Tensor>
                    ?? throw new NotSupportedException($"module '{path}' ({module.GetType().Name}) cannot be wrapped by LoRA"));
                layer.AddAdapter(name, c.R, scale, lora);
                return existing is null ? layer : null;
            });
        }

        var blocks = ModuleTree.Walk(model.Base)
            .Where(x => x.Module is MixLoraMoe || (x.Module is nn.Module<Tensor, Tensor> m && IsGatedFfn(m) && !InsideMoe(model, x.Path)))
            .Where(x => c.LayersToTransform is not { Length: > 0 } wanted || TargetMatcher.LayerIndex(x.Path, c.LayersPattern) is { } i && wanted.Contains(i))
            .ToList();
        if (blocks.Count == 0)
            throw new NotSupportedException($"MixLoRA found no gated feed-forward block (gate_proj, up_proj, down_proj) in {model.Base.Config.Architecture}");
        foreach (var (path, module) in blocks)
        {
            var moe = module as MixLoraMoe ?? new MixLoraMoe((nn.Module<Tensor, Tensor>)module, path, model.Base.Config.HiddenAct, model.Routing);
            moe.AddAdapter(name, c, ffn);
            if (module is not MixLoraMoe)
            {
                ModuleTree.Replace(model.Base, path, moe);
                moe.train(moe.BaseLayer.training);
            }
        }
    }

    static bool IsGatedFfn(nn.Module m)
    {
        var names = m.named_children().Select(c => c.name).ToHashSet();
        return MixLoraMoe.Projections.All(names.Contains);
    }

    static bool InsideMoe(PeftModel model, string path)
    {
        var parts = path.Split('.');
        for (int i = 1; i < parts.Length; i++)
            if (ModuleTree.Get(model.Base, string.Join('.', parts[..i])) is MixLoraMoe) return true;
        return false;
    }

    public ITrainingHooks? TrainingHooks(PeftModel model, string adapter) =>
        model.Configs[adapter] is MixLoraConfig { RouterLoss: true, RouterAuxLossCoef: > 0 } c ? new AuxLoss(adapter, c) : null;

    /// <summary>a · E · Σ f P over the router logits of every block's last training forward.</summary>
    sealed class AuxLoss(string adapter, MixLoraConfig c) : ITrainingHooks
    {
        public Tensor ExtraLoss(PeftModel model)
        {
            var logits = model.TunerLayers().Select(x => x.Layer).OfType<MixLoraMoe>().Select(l => l.TakeRouterLogits(adapter)).OfType<Tensor>().ToList();
            if (logits.Count == 0) return zeros(1, device: model.Device).squeeze();
            using var all = cat(logits, 0);
            foreach (var t in logits) t.Dispose();
            return LoadBalancing.Loss(all, c.TopK) * c.RouterAuxLossCoef;
        }

        public void AfterOptimizerStep(PeftModel model, int step) { }
    }
}
