using System.Text.Json.Nodes;
using PeftSharp.IO;
using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Combining;

/// <summary>Runnable Llama models of a few thousand parameters, written as model folders, and data sampled from them.</summary>
internal static class TinyLlama
{
    public const int Vocab = 24;

    public static ModelConfig Config() => ModelConfig.Parse(JsonNode.Parse($$"""
        {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": {{Vocab}}, "hidden_size": 16,
         "intermediate_size": 24, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
         "rms_norm_eps": 1e-6, "tie_word_embeddings": false}
        """)!.AsObject());

    /// <summary>
    /// Weights drawn with std <paramref name="scale"/> (norms stay 1), so that the model's next-token distributions are
    /// peaked and a loss can tell models apart; an untrained init (std 0.02) is near uniform.
    /// </summary>
    public static Dictionary<string, Tensor> Weights(long seed, double scale = 0.5)
    {
        using var g = new Generator((ulong)seed, device: null);
        using var model = AutoModel.Create(Config());
        return model.state_dict().ToDictionary(kv => kv.Key,
            kv => kv.Key.EndsWith("norm.weight", StringComparison.Ordinal) ? ones_like(kv.Value) : randn(kv.Value.shape, generator: g) * scale);
    }

    /// <summary><paramref name="weights"/> plus Gaussian noise of std <paramref name="noise"/> on every weight.</summary>
    public static Dictionary<string, Tensor> Noisy(Dictionary<string, Tensor> weights, long seed, double noise)
    {
        using var g = new Generator((ulong)seed, device: null);
        return weights.ToDictionary(kv => kv.Key, kv => kv.Value + noise * randn(kv.Value.shape, generator: g));
    }

    public static string Write(string dir, string name, Dictionary<string, Tensor> weights)
    {
        var folder = Path.Combine(dir, name);
        SafetensorsWriter.SaveCheckpoint(folder, weights);
        File.WriteAllText(Path.Combine(folder, "config.json"), """
            {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 24, "hidden_size": 16,
             "intermediate_size": 24, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
             "rms_norm_eps": 1e-6, "tie_word_embeddings": false, "torch_dtype": "float32"}
            """);
        return folder;
    }

    public static PretrainedModel Load(Dictionary<string, Tensor> weights, ScalarType dtype = ScalarType.Float32)
    {
        var model = AutoModel.Create(Config(), dtype);
        using (no_grad())
            foreach (var (name, p) in model.named_parameters()) p.copy_(weights[name]);
        model.eval();
        return model;
    }

    /// <summary><paramref name="rows"/> sequences of <paramref name="length"/> tokens sampled from the model, as [rows, length].</summary>
    public static Tensor Sample(ILanguageModel model, int rows, int length, long seed)
    {
        using var g = new Generator((ulong)seed, device: null);
        using var _ = no_grad();
        var ids = randint(0, Vocab, [rows, 1], dtype: ScalarType.Int64, generator: g);
        while (ids.shape[1] < length)
        {
            using var scope = NewDisposeScope();
            var probs = model.Forward(ModelInputs.Ids(ids))[.., -1].softmax(-1);
            ids = cat([ids, multinomial(probs, 1, generator: g)], 1).MoveToOuterDisposeScope();
        }
        return ids;
    }

    /// <summary>Writes [rows, T] ids as <c>{"input_ids": [...]}</c> lines.</summary>
    public static string WriteJsonl(string path, Tensor ids)
    {
        var lines = Enumerable.Range(0, (int)ids.shape[0]).Select(i => $$"""{"input_ids": [{{string.Join(", ", ids[i].data<long>().ToArray())}}]}""");
        File.WriteAllLines(path, lines);
        return path;
    }
}
