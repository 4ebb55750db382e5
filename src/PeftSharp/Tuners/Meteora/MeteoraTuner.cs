using PeftSharp.IO;
using PeftSharp.Peft;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Meteora;

public sealed class MeteoraTuner : ITuner
{
    public string PeftType => "METEORA";
    public Type ConfigType => typeof(MeteoraConfig);
    public IReadOnlySet<string> KnownUnusedKeys { get; } = new HashSet<string>();

    // The adapters to mix cannot come from --lora-* flags: the preset says where to name them.
    public IReadOnlyList<MethodPreset> Presets { get; } =
    [
        new("meteora", _ => throw new ArgumentException("--method meteora needs the LoRA adapters to mix: give --adapter-config FILE " +
            "with {\"peft_type\": \"METEORA\", \"adapters\": [\"DIR\", ...], \"top_k\": 2}")),
    ];

    public PeftConfig ForLoading(PeftConfig config) => ((MeteoraConfig)config) with { ReadAdapters = false };

    public void Inject(PeftModel model, string name, PeftConfig config)
    {
        var c = (MeteoraConfig)config;
        if (c.Adapters.Length == 0) throw new ArgumentException("MeteoRA: 'adapters' names no LoRA adapter folder to mix");
        var sources = c.ReadAdapters ? c.Adapters.Select(Read).ToList() : null;
        if (sources is not null) c = Completed(c, sources);
        if (c.Scalings.Length != c.Adapters.Length)
            throw new ArgumentException($"MeteoRA: {c.Adapters.Length} adapters but {c.Scalings.Length} scalings; the config was not written by PeftSharp's MeteoRA");
        var final = c;
        LayerInjection.Inject(model, c, (path, module) =>
        {
            var existing = module as MeteoraLayer;
            var layer = existing ?? new MeteoraLayer(module as nn.Module<Tensor, Tensor>
                ?? throw new NotSupportedException($"module '{path}' ({module.GetType().Name}) cannot be wrapped by MeteoRA"), model.Routing);
            var loras = sources?.Select(s => s.Layer(path)).ToList() ?? Enumerable.Repeat<(Tensor, Tensor)?>(null, c.Adapters.Length).ToList();
            layer.AddAdapter(name, final, loras);
            return existing is null ? layer : null;
        });
        // Written back with the adapter: what was read from the adapters (rank, scalings, targets).
        if (!ReferenceEquals(c, config)) model.RegisterExtras(name, new CompletedConfig(c));
    }

    /// <summary>The config as saved: rank, scalings and targets filled in from the adapters.</summary>
    public PeftConfig BeforeSave(PeftModel model, string adapter, PeftConfig config, Dictionary<string, Tensor> tensors, bool convertToLora) =>
        model.Extras(adapter) is CompletedConfig done ? done.Config with { InferenceMode = config.InferenceMode } : config;

    static MeteoraConfig Completed(MeteoraConfig c, List<Source> sources)
    {
        var ranks = sources.Select(s => s.Config.R).Distinct().ToList();
        if (ranks.Count > 1) throw new ArgumentException($"MeteoRA mixes adapters of one rank; these have ranks {string.Join(", ", sources.Select(s => $"{s.Dir}: {s.Config.R}"))}");
        var targets = c.TargetModules ?? ModuleSelector.Of(sources.SelectMany(s => s.Config.TargetModules?.Names ?? []).Distinct().ToArray());
        return c with
        {
            R = ranks[0],
            Scalings = sources.Select(s => s.Config.UseRslora ? s.Config.LoraAlpha / Math.Sqrt(s.Config.R) : s.Config.LoraAlpha / s.Config.R).ToArray(),
            TargetModules = targets,
        };
    }

    sealed record Source(string Dir, LoraConfig Config, Dictionary<string, Tensor> Tensors)
    {
        public (Tensor A, Tensor B)? Layer(string path) =>
            Tensors.TryGetValue($"base_model.model.{path}.lora_A.weight", out var a) && Tensors.TryGetValue($"base_model.model.{path}.lora_B.weight", out var b)
                ? (a, b) : null;
    }

    static Source Read(string dir)
    {
        var configPath = Path.Combine(dir, "adapter_config.json");
        if (!File.Exists(configPath)) throw new FileNotFoundException($"MeteoRA adapter '{dir}' has no adapter_config.json", configPath);
        if (PeftConfigJson.Load(configPath) is not LoraConfig lora)
            throw new ArgumentException($"MeteoRA mixes LoRA adapters; {configPath} is not LoRA");
        if (lora.UseDora) throw new NotSupportedException($"MeteoRA mixes plain LoRA adapters; {configPath} uses DoRA");
        using var f = SafetensorsFile.Open(Path.Combine(dir, PeftModel.WeightsFile));
        return new Source(dir, lora, f.LoadAll());
    }

    sealed class CompletedConfig(MeteoraConfig config) : IAdapterExtras
    {
        public MeteoraConfig Config => config;
        public IEnumerable<(string Key, Tensor Value)> StateDict() => [];
        public void LoadStateDict(IReadOnlyDictionary<string, Tensor> tensors, string source) { }
        public IEnumerable<TorchSharp.Modules.Parameter> TrainableParameters() => [];
    }
}
