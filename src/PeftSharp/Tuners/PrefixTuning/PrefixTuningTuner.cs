using PeftSharp.Peft;

namespace PeftSharp.Tuners.PrefixTuning;

public sealed class PrefixTuningTuner : ITuner
{
    public string PeftType => "PREFIX_TUNING";
    public Type ConfigType => typeof(PrefixTuningConfig);
    public IReadOnlySet<string> KnownUnusedKeys { get; } = new HashSet<string> { "auto_mapping" };

    // PEFT saves the prefix itself (the projection's output), so a loaded adapter is a plain table.
    public PeftConfig ForLoading(PeftConfig config) => (PrefixTuningConfig)config with { InferenceMode = true };

    public IReadOnlyList<MethodPreset> Presets { get; } =
        [new("prefix_tuning", s => new PrefixTuningConfig { NumVirtualTokens = 16, TaskType = s.TaskType })];

    public void Inject(PeftModel model, string name, PeftConfig config)
    {
        var c = (PrefixTuningConfig)config;
        var m = model.Base;
        if (!m.IsCausalLM)
            throw new NotSupportedException($"PREFIX_TUNING puts its virtual tokens in the KV cache, which {m.Config.Architecture} does not have; use prompt tuning or P-tuning");
        c.Validate(m);
        var (tokenDim, heads, layers) = c.Resolve(m.Config);
        // Grouped-query attention: the prefix holds key/value heads only (PEFT, issue #1901).
        tokenDim = tokenDim / heads * m.Config.NumKvHeads;
        heads = m.Config.NumKvHeads;
        if (layers != m.Config.NumLayers || tokenDim != heads * m.Config.HeadDim)
            throw new ArgumentException($"PREFIX_TUNING: num_layers={layers}, token_dim={tokenDim}, num_attention_heads={heads} do not fit " +
                $"{m.Config.Architecture} ({m.Config.NumLayers} layers, {m.Config.NumKvHeads} key/value heads of size {m.Config.HeadDim}): " +
                "is this adapter for another model?");
        if (c.InitWeights is not (null or "zero"))
            throw new ArgumentException($"PREFIX_TUNING: init_weights must be null or \"zero\", got \"{c.InitWeights}\"");
        var projection = c.PrefixProjection && !c.InferenceMode;
        var encoder = new PrefixEncoder(c.NumVirtualTokens, tokenDim, layers, c.EncoderHiddenSize ?? tokenDim, projection,
            c.InitWeights == "zero", m.Device);
        model.RegisterExtras(name, new PrefixAdapter(encoder, c.NumVirtualTokens, layers, heads, m.Config.HeadDim));
    }
}
