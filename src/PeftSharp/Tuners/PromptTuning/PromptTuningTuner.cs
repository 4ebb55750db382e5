using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tuners.PromptLearning;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.PromptTuning;

public sealed class PromptTuningTuner : ITuner
{
    public string PeftType => "PROMPT_TUNING";
    public Type ConfigType => typeof(PromptTuningConfig);
    public IReadOnlySet<string> KnownUnusedKeys { get; } = new HashSet<string> { "auto_mapping" };

    // Saved weights replace the table: no need for a tokenizer to initialise it.
    public PeftConfig ForLoading(PeftConfig config) => (PromptTuningConfig)config with { InferenceMode = true };

    public IReadOnlyList<MethodPreset> Presets { get; } =
        [new("prompt_tuning", s => new PromptTuningConfig { NumVirtualTokens = 16, TaskType = s.TaskType })];

    public void Inject(PeftModel model, string name, PeftConfig config)
    {
        var c = (PromptTuningConfig)config;
        var m = model.Base;
        int dim = c.Validate(m);
        if (dim != m.Config.HiddenSize)
            throw new ArgumentException($"PROMPT_TUNING: token_dim {dim} differs from the model's hidden size {m.Config.HiddenSize}");
        // Modules are built outside any dispose scope, so that their parameters outlive it.
        using var initial = c.InferenceMode ? null : Initial(m, c);
        model.RegisterExtras(name, new InputPromptAdapter(new PromptEmbedding(c.NumVirtualTokens, dim, m.Device, initial), c.NumVirtualTokens));
    }

    // PEFT's PromptEmbedding init: RANDOM keeps nn.Embedding's N(0,1); TEXT and SAMPLE_VOCAB copy word embeddings.
    static Tensor? Initial(PretrainedModel m, PromptTuningConfig c)
    {
        int n = c.NumVirtualTokens;
        int[] ids;
        switch (c.PromptTuningInit)
        {
            case "RANDOM": return null;
            case "SAMPLE_VOCAB":
                using (var sample = randint(0, m.Config.VocabSize, n, ScalarType.Int64))
                    ids = sample.data<long>().Select(x => (int)x).ToArray();
                break;
            case "TEXT":
                if (string.IsNullOrEmpty(c.PromptTuningInitText))
                    throw new ArgumentException("PROMPT_TUNING: prompt_tuning_init=TEXT needs prompt_tuning_init_text");
                if (c.Tokenizer is null)
                    throw new ArgumentException("PROMPT_TUNING: prompt_tuning_init=TEXT needs a tokenizer: set PromptTuningConfig.Tokenizer " +
                        $"(text -> ids){(c.TokenizerNameOrPath is { } t ? $", e.g. one loaded from '{t}'" : "")}");
                var text = c.Tokenizer(c.PromptTuningInitText);
                if (text.Length == 0) throw new ArgumentException($"PROMPT_TUNING: prompt_tuning_init_text '{c.PromptTuningInitText}' tokenizes to no ids");
                ids = Enumerable.Range(0, n).Select(i => text[i % text.Length]).ToArray(); // cut, or repeat until n
                break;
            default:
                throw new ArgumentException($"PROMPT_TUNING: prompt_tuning_init '{c.PromptTuningInit}' is not one of RANDOM, TEXT, SAMPLE_VOCAB");
        }
        if (ids.Any(i => i < 0 || i >= m.Config.VocabSize))
            throw new ArgumentException($"PROMPT_TUNING: init token ids must be in [0, {m.Config.VocabSize}); got {string.Join(",", ids)}");
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var idTensor = tensor(ids.Select(i => (long)i).ToArray(), device: m.Device).unsqueeze(0);
        return m.Embed(idTensor).squeeze(0).to(ScalarType.Float32).clone().MoveToOuterDisposeScope();
    }
}
