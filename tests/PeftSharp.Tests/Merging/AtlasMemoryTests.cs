using System.Text.Json.Nodes;
using PeftSharp.IO;
using PeftSharp.Models;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Merging;

/// <summary>
/// aTLAS from the command line holds the model it trains and its gradients, not the inputs: with three task models of
/// a 67 MB float32 Llama, the child's peak anonymous memory stays under two models plus 350 MB for the runtime,
/// libtorch and the batch (the first Atlas.Run, which held the task vectors and a copy of the base, cannot: five
/// models' worth on top of the runtime). Measured here (2026-12-02, `benchmarks -- atlas --hidden 512 --layers 4
/// --tasks 3 --steps 3`): 328 MB streamed, 757 MB held; this test takes one small step.
/// </summary>
public class AtlasMemoryTests(ITestOutputHelper output) : IDisposable
{
    readonly string dir = TestDirs.New();

    public void Dispose() => Directory.Delete(dir, recursive: true);

    [Fact]
    public void Atlas_holds_the_model_and_its_gradients_but_no_copy_of_the_inputs()
    {
        var sw = System.Diagnostics.Stopwatch.StartNew();
        long modelBytes = WriteInputs();
        output.WriteLine($"inputs written in {sw.Elapsed.TotalSeconds:F1} s");
        long limit = 2 * modelBytes + 350_000_000;
        File.WriteAllText(Path.Combine(dir, "atlas.yaml"), "merge_method: atlas\nbase_model: base\nparameters: {steps: 1, batch_size: 2}\nmodels: [t1, t2, t3]\n");
        // one OpenMP thread: on a busy machine libtorch's spinning threads made this one step take 15 s instead of 3
        var (exitCode, log, peak) = StreamingMemoryTests.RunCli(dir, new Dictionary<string, string> { ["OMP_NUM_THREADS"] = "1" }, "merge-models", "--config", "atlas.yaml", "--out", "out", "--train-file", "train.jsonl", "-q");
        output.WriteLine(log);
        output.WriteLine($"atlas: model {modelBytes / 1e6:F0} MB x 4 inputs, child peak anonymous memory {peak / 1e6:F0} MB, limit {limit / 1e6:F0} MB");
        Assert.True(exitCode == 0, log);
        Assert.True(peak > 0, "peak memory was not measured");
        Assert.True(peak < limit, $"peak anonymous memory {peak / 1e6:F0} MB is over the {limit / 1e6:F0} MB limit (model: {modelBytes / 1e6:F0} MB, 3 task models)");
        using var composed = Checkpoint.Open(Path.Combine(dir, "out"));
        Assert.True(File.Exists(Path.Combine(dir, "out", PeftSharp.Merging.Atlas.CoefficientsFile)));
    }

    // A random float32 Llama (hidden 512, 4 layers, vocabulary 4096: 16.8M parameters) and three noisy copies of it.
    long WriteInputs()
    {
        var config = """
            {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 4096, "hidden_size": 512,
             "intermediate_size": 1365, "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 8,
             "rms_norm_eps": 1e-5, "tie_word_embeddings": false, "torch_dtype": "float32"}
            """;
        Dictionary<string, Tensor> weights;
        using (var model = AutoModel.Create(ModelConfig.Parse(JsonNode.Parse(config)!.AsObject())))
            weights = model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.detach().clone());
        foreach (var name in new[] { "base", "t1", "t2", "t3" })
        {
            using var scope = NewDisposeScope();
            double scale = 1 + 0.001 * (name == "base" ? 0 : name[1] - '0');   // cheap to make: the sizes matter here, not the numbers
            var tensors = scale == 1 ? weights : weights.ToDictionary(kv => kv.Key, kv => kv.Value * scale);
            SafetensorsWriter.SaveCheckpoint(Path.Combine(dir, name), tensors);
            File.WriteAllText(Path.Combine(dir, name, "config.json"), config);
        }
        File.WriteAllLines(Path.Combine(dir, "train.jsonl"), Enumerable.Range(0, 4).Select(i => $$"""{"input_ids": [{{string.Join(", ", Enumerable.Range(0, 16).Select(j => (i * 131 + j * 17) % 4096))}}]}"""));
        long bytes = weights.Values.Sum(t => t.NumberOfElements * 4);
        foreach (var t in weights.Values) t.Dispose();
        return bytes;
    }
}
