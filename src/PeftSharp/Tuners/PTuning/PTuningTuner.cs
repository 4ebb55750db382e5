using PeftSharp.Peft;
using PeftSharp.Tuners.PromptLearning;

namespace PeftSharp.Tuners.PTuning;

public sealed class PTuningTuner : ITuner
{
    public string PeftType => "P_TUNING";
    public Type ConfigType => typeof(PromptEncoderConfig);
    public IReadOnlySet<string> KnownUnusedKeys { get; } = new HashSet<string> { "auto_mapping" };

    // PEFT saves the encoder's output: a loaded adapter is a plain table (it still trains, as a table, if asked to).
    public PeftConfig ForLoading(PeftConfig config) => (PromptEncoderConfig)config with { InferenceMode = true };

    public IReadOnlyList<MethodPreset> Presets { get; } =
        [new("p_tuning", s => new PromptEncoderConfig { NumVirtualTokens = 16, EncoderHiddenSize = s.Model.HiddenSize, TaskType = s.TaskType })];

    public void Inject(PeftModel model, string name, PeftConfig config)
    {
        var c = (PromptEncoderConfig)config;
        var m = model.Base;
        int dim = c.Validate(m);
        if (dim != m.Config.HiddenSize)
            throw new ArgumentException($"P_TUNING: token_dim {dim} differs from the model's hidden size {m.Config.HiddenSize}");
        if (c.EncoderNumLayers <= 0) throw new ArgumentException($"P_TUNING: encoder_num_layers must be positive, got {c.EncoderNumLayers}");
        var encoder = new PromptEncoder(c.NumVirtualTokens, dim, c, tableOnly: c.InferenceMode, m.Device);
        model.RegisterExtras(name, new InputPromptAdapter(encoder, c.NumVirtualTokens));
    }
}
