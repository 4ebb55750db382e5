using PeftSharp.Models;
using PeftSharp.Tuners;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace PeftSharp.Peft;

/// <summary>
/// A base model with one or more named adapters injected, as PEFT's <c>PeftModel</c>: the base is frozen,
/// adapters can be switched, combined, disabled, merged into the weights, saved and loaded in PEFT's format.
/// </summary>
public sealed partial class PeftModel : ILanguageModel
{
    readonly Dictionary<string, PeftConfig> configs = new();
    readonly Dictionary<string, IAdapterExtras> extras = new();
    List<string> active = new();

    PeftModel(PretrainedModel model) => Base = model;

    /// <summary>The adapted model (changed in place: its targeted layers are now wrappers).</summary>
    public PretrainedModel Base { get; }
    public IReadOnlyDictionary<string, PeftConfig> Configs => configs;
    public IReadOnlyList<string> ActiveAdapters => active;
    public Device Device => Base.Device;

    /// <summary>Wraps <paramref name="model"/> with a new adapter named <paramref name="adapterName"/> (PEFT's get_peft_model).</summary>
    public static PeftModel Create(PretrainedModel model, PeftConfig config, string adapterName = "default")
    {
        var pm = new PeftModel(model);
        foreach (var p in model.parameters()) p.requires_grad = false;
        pm.AddAdapter(adapterName, config);
        pm.SetAdapter(adapterName);
        return pm;
    }

    /// <summary>Adds another adapter (inactive until <see cref="SetAdapter"/>).</summary>
    public void AddAdapter(string name, PeftConfig config) => AddAdapter(name, config, loading: false);

    void AddAdapter(string name, PeftConfig config, bool loading)
    {
        if (configs.ContainsKey(name)) throw new ArgumentException($"an adapter named '{name}' already exists");
        if (configs.Values.Any(c => c.IsPromptLearning) || (config.IsPromptLearning && configs.Count > 0))
            throw new NotSupportedException("a prompt-learning adapter cannot be combined with other adapters on one model");
        var tuner = TunerRegistry.For(config);
        tuner.Inject(this, name, loading ? tuner.ForLoading(config) : config);
        configs[name] = config;
        var toSave = ((config as LayerTunerConfig)?.ModulesToSave ?? []).Concat(ModulesToSaveDefaults(config)).Distinct().ToArray();
        if (toSave.Length > 0) AddModulesToSave(name, toSave);
        Freeze(name);
    }

    // PEFT adds the classification head for SEQ_CLS so that it trains and is saved with the adapter.
    static string[] ModulesToSaveDefaults(PeftConfig c) => c.TaskType == "SEQ_CLS" ? ["classifier", "score"] : [];

    void AddModulesToSave(string adapter, string[] names)
    {
        foreach (var (path, module) in ModuleTree.Walk(Base).ToList())
        {
            if (path.Length == 0 || !names.Any(n => path == n || path.EndsWith("." + n, StringComparison.Ordinal))) continue;
            if (module is ModulesToSaveWrapper w) { w.AddAdapter(adapter); continue; }
            if (path.Split('.').Any(p => p is "modules_to_save" or "original_module")) continue;
            var wrapper = new ModulesToSaveWrapper(module as Module<Tensor, Tensor>
                ?? throw new NotSupportedException($"modules_to_save: '{path}' is a {module.GetType().Name}, which cannot be copied"));
            wrapper.AddAdapter(adapter);
            ModuleTree.Replace(Base, path, wrapper);
        }
    }

    /// <summary>Registers model-level adapter state (prompt embeddings, shared projections); called by tuners.</summary>
    public void RegisterExtras(string adapter, IAdapterExtras state) => extras[adapter] = state;

    public IAdapterExtras? Extras(string adapter) => extras.GetValueOrDefault(adapter);

    /// <summary>Every wrapped layer with its path.</summary>
    public IEnumerable<(string Path, ITunerLayer Layer)> TunerLayers() =>
        ModuleTree.Walk(Base).Where(x => x.Module is ITunerLayer).Select(x => (x.Path, (ITunerLayer)x.Module));

    IEnumerable<(string Path, ModulesToSaveWrapper Wrapper)> SavedModules() =>
        ModuleTree.Walk(Base).Where(x => x.Module is ModulesToSaveWrapper).Select(x => (x.Path, (ModulesToSaveWrapper)x.Module));

    /// <summary>Makes the named adapters active (their outputs are summed) and the only trainable ones.</summary>
    public void SetAdapter(params string[] names)
    {
        foreach (var n in names)
            if (!configs.ContainsKey(n)) throw new KeyNotFoundException($"no adapter named '{n}'; adapters: {string.Join(", ", configs.Keys)}");
        active = names.ToList();
        foreach (var (_, layer) in TunerLayers()) layer.ActiveAdapters = active.Where(layer.AdapterNames.Contains).ToList();
        foreach (var (_, w) in SavedModules()) w.ActiveAdapter = active.FirstOrDefault(w.AdapterNames.Contains);
        foreach (var n in configs.Keys) Freeze(n);
    }

    // Adapter parameters train only while their adapter is active and not loaded for inference.
    void Freeze(string adapter)
    {
        bool trainable = active.Contains(adapter) && !configs[adapter].InferenceMode;
        foreach (var p in AdapterParameters(adapter)) p.requires_grad = trainable;
    }

    /// <summary>Runs the base model alone until disposed (adapters stay loaded).</summary>
    public IDisposable DisableAdapters()
    {
        SetDisabled(true);
        return new Restore(() => SetDisabled(false));
    }

    void SetDisabled(bool disabled)
    {
        foreach (var (_, layer) in TunerLayers()) layer.Disabled = disabled;
        foreach (var (_, w) in SavedModules()) w.Disabled = disabled;
        adaptersDisabled = disabled;
    }

    bool adaptersDisabled;

    public void DeleteAdapter(string name)
    {
        if (!configs.Remove(name)) throw new KeyNotFoundException($"no adapter named '{name}'");
        foreach (var (_, layer) in TunerLayers()) if (layer.AdapterNames.Contains(name)) layer.DeleteAdapter(name);
        foreach (var (_, w) in SavedModules()) w.DeleteAdapter(name);
        extras.Remove(name);
        active.Remove(name);
    }

    // A prompt-learning adapter runs the model itself (virtual tokens, a pre-filled cache).
    IPromptAdapter? ActivePrompt => !adaptersDisabled && active.Count == 1 ? extras.GetValueOrDefault(active[0]) as IPromptAdapter : null;

    public Tensor Forward(ModelInputs inputs)
    {
        using var _ = Routing.Use(inputs.TaskIds);
        return ActivePrompt is { } prompt ? prompt.Forward(Base, inputs) : Base.Forward(inputs);
    }

    /// <summary>The adapted base model's hidden states and head; null under a prompt-learning adapter, which changes the sequence.</summary>
    public (Tensor Hidden, Linear Head)? HiddenAndHead(ModelInputs inputs)
    {
        using var _ = Routing.Use(inputs.TaskIds);
        return ActivePrompt is null ? Base.HiddenAndHead(inputs) : null;
    }

    /// <summary>What routed methods read during a forward (the batch's task ids) and where they report their routing.</summary>
    public RoutingContext Routing { get; } = new();

    public KvCache NewCache() =>
        ActivePrompt is { } prompt ? prompt.NewCache(Base, 1) : Base.NewCache();

    public bool CacheExpires(long cached, long total) => Base.CacheExpires(cached, total);

    /// <summary>Parameters of one adapter: its layer weights, modules_to_save copies, model-level state, trained biases.</summary>
    public IEnumerable<Parameter> AdapterParameters(string adapter)
    {
        foreach (var (_, layer) in TunerLayers())
            if (layer.AdapterNames.Contains(adapter))
                foreach (var p in layer.AdapterParameters(adapter)) yield return p;
        foreach (var (_, w) in SavedModules())
            if (w.AdapterNames.Contains(adapter))
                foreach (var (_, p) in w.Parameters(adapter)) yield return p;
        if (extras.GetValueOrDefault(adapter) is { } e)
            foreach (var p in e.TrainableParameters()) yield return p;
        foreach (var (_, p) in TrainedBaseParameters(adapter)) yield return p;
    }

    /// <summary>The parameters that will receive gradients, with their names.</summary>
    public List<(string Name, Parameter P)> TrainableParameters() =>
        Base.named_parameters().Where(x => x.parameter.requires_grad).Select(x => (x.name, x.parameter))
            .Concat(extras.Values.SelectMany(e => e.TrainableParameters()).Where(p => p.requires_grad).Select((p, i) => ($"extras.{i}", p)))
            .ToList();

    /// <summary>PEFT's print_trainable_parameters line.</summary>
    public string TrainableParametersSummary()
    {
        long trainable = TrainableParameters().Sum(x => x.P.numel());
        long all = Base.DistinctParameters().Sum(p => p.numel()) + extras.Values.SelectMany(e => e.TrainableParameters()).Sum(p => p.numel());
        return $"trainable params: {trainable:N0} || all params: {all:N0} || trainable%: {100.0 * trainable / all:F4}";
    }

    sealed class Restore(Action undo) : IDisposable
    {
        public void Dispose() => undo();
    }
}
