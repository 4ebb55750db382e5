using System.Text.Json;
using PeftSharp.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Models;

/// <summary>Writes a model as a Hugging Face checkpoint folder that transformers and <see cref="AutoModel"/> load.</summary>
public static class ModelSaving
{
    static readonly string[] SideFiles =
        ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json", "chat_template.jinja", "vocab.txt", "merges.txt", "vocab.json"];

    /// <summary>
    /// config.json (dtype updated), weights (sharded with an index past <paramref name="maxShardBytes"/>; tied weights
    /// written once, as transformers does) and the tokenizer/generation files copied from <paramref name="sourceFolder"/>.
    /// </summary>
    public static void SavePretrained(PretrainedModel model, string? sourceFolder, string outFolder, ScalarType dtype = ScalarType.Float32,
        long maxShardBytes = 5_000_000_000)
    {
        // Staged and published as merge-models does: an interrupted save leaves no half model, and weights of the other
        // layout from an earlier save into the same folder are removed, so a loader cannot serve them.
        var stage = StagedFolder.Create(outFolder);
        try
        {
            WriteFolder(model, sourceFolder, outFolder, stage, dtype, maxShardBytes);
            StagedFolder.Publish(stage, outFolder);
        }
        catch
        {
            StagedFolder.Discard(stage);
            throw;
        }
    }

    static void WriteFolder(PretrainedModel model, string? sourceFolder, string outFolder, string stage, ScalarType dtype, long maxShardBytes)
    {
        var tied = model.TiedWeights;
        var named = model.named_parameters().Where(p => !tied.Contains(p.name)).Select(p => (p.name, (Tensor)p.parameter)).ToList();
        var specs = named.Select(p => new TensorSpec(p.name, dtype, p.Item2.shape)).ToList();
        using (var w = new ShardedCheckpointWriter(stage, specs, maxShardBytes))
        {
            foreach (var (name, t) in named)
            {
                using var scope = NewDisposeScope();
                w.Write(name, t.detach().to(dtype).cpu());
            }
            w.Commit();
        }
        var config = (System.Text.Json.Nodes.JsonObject)model.Config.Raw.DeepClone();
        config["dtype"] = dtype switch { ScalarType.BFloat16 => "bfloat16", ScalarType.Float16 => "float16", _ => "float32" };
        config.Remove("torch_dtype");
        AtomicFile.WriteAllText(Path.Combine(stage, "config.json"), config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        if (sourceFolder is null || Path.GetFullPath(sourceFolder).TrimEnd('/') == Path.GetFullPath(outFolder).TrimEnd('/')) return;
        foreach (var f in SideFiles)
        {
            var src = Path.Combine(sourceFolder, f);
            if (File.Exists(src)) File.Copy(src, Path.Combine(stage, f), overwrite: true);
        }
    }
}
