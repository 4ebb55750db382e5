using PeftSharp.IO;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Merging;

/// <summary>Small generated checkpoints shaped like a 3-layer Llama, for merge tests that need their own inputs.</summary>
internal static class TinyModels
{
    public static readonly string[] LayerTensors = ["self_attn.q_proj.weight", "mlp.up_proj.weight", "input_layernorm.weight"];

    public static Dictionary<string, long[]> Shapes(int layers = 3, int vocab = 10)
    {
        var shapes = new Dictionary<string, long[]> { ["model.embed_tokens.weight"] = [vocab, 4] };
        for (int i = 0; i < layers; i++)
        {
            shapes[$"model.layers.{i}.self_attn.q_proj.weight"] = [4, 4];
            shapes[$"model.layers.{i}.mlp.up_proj.weight"] = [6, 4];
            shapes[$"model.layers.{i}.input_layernorm.weight"] = [4];
        }
        shapes["model.norm.weight"] = [4];
        shapes["lm_head.weight"] = [vocab, 4];
        return shapes;
    }

    /// <summary>Writes a model folder with random weights (seeded) and a config.json; returns its path.</summary>
    public static string Write(string dir, string name, long seed, Dictionary<string, long[]>? shapes = null,
        string architecture = "LlamaForCausalLM", Func<string, Tensor, Tensor>? edit = null)
    {
        var folder = Path.Combine(dir, name);
        using var g = new Generator((ulong)seed, device: null);
        var tensors = (shapes ?? Shapes()).ToDictionary(kv => kv.Key, kv =>
        {
            var t = randn(kv.Value, generator: g);
            return edit?.Invoke(kv.Key, t) ?? t;
        });
        SafetensorsWriter.SaveCheckpoint(folder, tensors);
        int layers = tensors.Keys.Select(k => PeftSharp.Merging.LayerDepth.LayerIndex(k) ?? -1).Max() + 1;
        File.WriteAllText(Path.Combine(folder, "config.json"),
            $$"""{"architectures": ["{{architecture}}"], "model_type": "llama", "num_hidden_layers": {{layers}}, "torch_dtype": "float32"}""");
        foreach (var t in tensors.Values) t.Dispose();
        return folder;
    }

    public static Dictionary<string, Tensor> Read(string folder)
    {
        using var c = Checkpoint.Open(folder);
        return c.LoadAll();
    }
}
