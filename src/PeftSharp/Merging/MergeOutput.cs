using System.Text.Json;
using System.Text.Json.Nodes;
using PeftSharp.IO;

namespace PeftSharp.Merging;

/// <summary>
/// The output folder of a merge. Everything is written to a staging folder beside it and moved in only when complete,
/// so an interrupted merge never leaves a half-written model (<see cref="StagedFolder"/>, shared with <c>merge</c>).
/// </summary>
internal static class MergeOutput
{
    /// <summary>Tokenizer files as transformers saves them, plus generation_config.json.</summary>
    static readonly string[] TokenizerFiles =
    [
        "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "vocab.json", "merges.txt",
        "added_tokens.json", "vocab.txt", "chat_template.jinja", "generation_config.json",
    ];

    public static string Stage(string target) => StagedFolder.Create(target);

    public static void Discard(string stage) => StagedFolder.Discard(stage);

    public static void Publish(string stage, string target) => StagedFolder.Publish(stage, target);

    /// <summary>Copies config.json, recording the output dtype in it when one was asked for.</summary>
    public static void CopyConfig(string? configJson, string stage, string? dtypeName)
    {
        if (configJson is null || !File.Exists(configJson)) return;
        var node = JsonNode.Parse(File.ReadAllText(configJson));
        if (node is JsonObject o && dtypeName is not null)
        {
            // transformers 4.x reads torch_dtype, 5.x writes dtype.
            if (o.ContainsKey("dtype")) o["dtype"] = dtypeName;
            if (o.ContainsKey("torch_dtype") || !o.ContainsKey("dtype")) o["torch_dtype"] = dtypeName;
        }
        AtomicFile.WriteAllText(Path.Combine(stage, "config.json"), node?.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) ?? "{}");
    }

    public static int CopyTokenizer(string? folder, string stage)
    {
        if (folder is null) return 0;
        int copied = 0;
        foreach (var name in TokenizerFiles)
        {
            var src = Path.Combine(folder, name);
            if (!File.Exists(src)) continue;
            File.Copy(src, Path.Combine(stage, name), overwrite: true);
            copied++;
        }
        return copied;
    }
}
