namespace PeftSharp.IO;

/// <summary>
/// An output folder written in one piece: everything goes to <c>&lt;target&gt;.partial-&lt;pid&gt;</c> beside it and is moved in
/// only when complete. A new folder appears in one rename; into an existing folder the new files are moved in first
/// (shards before the index) and weight files of an earlier run that the new one does not have (the single file after
/// a sharded save, stale shards after a single-file one, an adapter after a model) are removed after, so a loader
/// never picks an old file over the new ones.
/// </summary>
internal static class StagedFolder
{
    /// <summary>Weight files that would be read instead of, or beside, the ones a new save writes.</summary>
    static readonly string[] WeightFilePatterns =
        ["model*.safetensors", Checkpoint.IndexFile, "adapter_model.safetensors", "adapter_config.json"];

    public static string Create(string target)
    {
        var full = Path.GetFullPath(target).TrimEnd(Path.DirectorySeparatorChar);
        Leftovers.RemoveStalePartials(full);
        var stage = $"{full}.partial-{Environment.ProcessId}";
        if (Directory.Exists(stage)) Directory.Delete(stage, recursive: true);
        Directory.CreateDirectory(stage);
        return stage;
    }

    public static void Discard(string stage)
    {
        try { if (Directory.Exists(stage)) Directory.Delete(stage, recursive: true); }
        catch (IOException) { }
    }

    public static void Publish(string stage, string target)
    {
        target = Path.GetFullPath(target).TrimEnd(Path.DirectorySeparatorChar);
        if (Directory.Exists(target) && !Directory.EnumerateFileSystemEntries(target).Any()) Directory.Delete(target);
        if (!Directory.Exists(target))
        {
            Directory.Move(stage, target);
            return;
        }
        var fresh = Directory.GetFiles(stage).Select(Path.GetFileName).ToHashSet();
        var stale = StaleWeightFiles(target, fresh!);
        // Shards before the index, so the index never names a shard that is not there yet.
        foreach (var f in Directory.GetFiles(stage).OrderBy(f => f.EndsWith(".index.json", StringComparison.Ordinal)))
            File.Move(f, Path.Combine(target, Path.GetFileName(f)), overwrite: true);
        foreach (var f in stale) File.Delete(f);
        Directory.Delete(stage, recursive: true);
    }

    /// <summary>Weight files in <paramref name="folder"/> whose names are not in <paramref name="fresh"/>.</summary>
    internal static List<string> StaleWeightFiles(string folder, IReadOnlySet<string> fresh) =>
        WeightFilePatterns.SelectMany(p => Directory.GetFiles(folder, p)).Distinct()
            .Where(f => !fresh.Contains(Path.GetFileName(f))).ToList();
}
