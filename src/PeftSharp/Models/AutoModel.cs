using PeftSharp.IO;
using PeftSharp.Models.Bert;
using PeftSharp.Models.Gemma;
using PeftSharp.Models.Phi3;
using PeftSharp.Models.Gpt2;
using PeftSharp.Models.Llama;
using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace PeftSharp.Models;

/// <summary>Builds the right architecture for a Hugging Face model folder and loads its weights.</summary>
public static class AutoModel
{
    public static PretrainedModel Create(ModelConfig c, ScalarType dtype = ScalarType.Float32) => c.ModelType switch
    {
        "llama" or "mistral" or "qwen2" or "qwen3" => LlamaForCausalLM.Create(c, dtype),
        "gemma2" or "gemma3_text" => GemmaForCausalLM.Create(c, dtype),
        "phi3" => Phi3ForCausalLM.Create(c, dtype),
        "gpt2" => new Gpt2LMHeadModel(c, dtype),
        "bert" when c.Architecture == "BertForSequenceClassification" || c.Architecture == "BertModel" => new BertForSequenceClassification(c, dtype),
        "bert" => throw new NotSupportedException($"BERT architecture '{c.Architecture}' is not supported (only BertForSequenceClassification)"),
        _ => throw new NotSupportedException($"model_type '{c.ModelType}' is not supported; supported: {string.Join(", ", ModelConfig.SupportedTypes)}"),
    };

    /// <summary>Loads <c>config.json</c> and the safetensors weights of <paramref name="folder"/>, cast to <paramref name="dtype"/>.</summary>
    public static PretrainedModel Load(string folder, ScalarType dtype = ScalarType.Float32, Device? device = null)
    {
        if (File.Exists(folder)) CheckpointFormat.RefusePickle(folder);
        var config = ModelConfig.Load(folder);
        using var ckpt = Checkpoint.Open(folder);
        PretrainedModel model;
        using (no_grad()) model = Create(config, dtype);
        LoadWeights(model, ckpt);
        model.eval();
        if (device is not null && device.type != DeviceType.CPU) model.to(device);
        return model;
    }

    /// <summary>
    /// Copies every parameter and buffer of <paramref name="model"/> from <paramref name="ckpt"/> by name: straight into
    /// the parameter's memory when the stored dtype is the model's, else with one cast.
    /// </summary>
    public static void LoadWeights(PretrainedModel model, Checkpoint ckpt)
    {
        var missing = new List<string>();
        var nonFinite = new List<(string, string)>();
        using var _ = no_grad();
        var tied = model.TiedWeights;
        var targets = model.named_parameters().Select(x => (x.name, (Tensor)x.parameter))
            .Concat(model.named_buffers().Select(x => (x.name, x.buffer)));
        foreach (var (name, p) in targets)
        {
            var stored = ResolveName(ckpt, name);
            if (stored is null)
            {
                if (!tied.Contains(name)) missing.Add(name);
                continue;
            }
            var info = ckpt.Info(stored);
            var file = ckpt.PathOf(stored);
            if (!info.Shape.SequenceEqual(p.shape))
                throw new InvalidDataException($"{file}: tensor '{stored}' has shape [{string.Join(",", info.Shape)}] " +
                    $"but the model built from config.json expects [{string.Join(",", p.shape)}]: does config.json belong to these weights?");
            if (p.is_floating_point() && !IsFloating(info.DType))
                throw new InvalidDataException($"{file}: tensor '{stored}' is stored as {info.DType}, but it is a floating-point weight " +
                    "of the model: integers would be cast silently. Is the file corrupt, or not a checkpoint of this model?");
            ckpt.LoadInto(stored, p);
            if (NonFiniteWeights.Has(p)) nonFinite.Add((file, stored));
        }
        if (missing.Count > 0)
            throw new InvalidDataException($"{(ckpt.Files.Count == 1 ? ckpt.Files[0].Path : ckpt.Folder)}: {missing.Count} weights are missing from the checkpoint: " +
                string.Join(", ", missing.Take(20)) + (missing.Count > 20 ? ", ..." : ""));
        NonFiniteWeights.Report(nonFinite);
    }

    static bool IsFloating(ScalarType t) => t is ScalarType.Float32 or ScalarType.Float64 or ScalarType.Float16 or ScalarType.BFloat16;

    // Base-model checkpoints (e.g. "h.0.attn..." for GPT-2, "embeddings..." for BERT) lack the head's prefix;
    // multimodal Gemma 3 ones keep the text model under "model.language_model." (5.x) or "language_model.model." (4.x).
    static string? ResolveName(Checkpoint ckpt, string name)
    {
        if (ckpt.Contains(name)) return name;
        int dot = name.IndexOf('.');
        if (dot > 0 && ckpt.Contains(name[(dot + 1)..])) return name[(dot + 1)..];
        string[] nested = name.StartsWith("model.", StringComparison.Ordinal)
            ? ["model.language_model." + name[6..], "language_model." + name]
            : ["language_model." + name];
        return nested.FirstOrDefault(ckpt.Contains);
    }
}
