namespace PeftSharp.IO;

/// <summary>Pickle checkpoints (<c>.bin</c>, <c>.pt</c>, <c>.pth</c>, <c>.ckpt</c>, <c>.pkl</c>) are refused, always with the reason.</summary>
internal static class CheckpointFormat
{
    static readonly string[] PickleExtensions = [".bin", ".pt", ".pth", ".ckpt", ".pkl"];

    public static bool IsPickle(string path) => PickleExtensions.Contains(Path.GetExtension(path).ToLowerInvariant());

    /// <summary>Pickle checkpoints can run arbitrary code when loaded, so we never read them.</summary>
    public static void RefusePickle(string path)
    {
        if (IsPickle(path))
            throw new SafetensorsException(path,
                "this is a pickle checkpoint (torch.save), which can execute arbitrary code when loaded, so PeftSharp refuses it. " +
                "Convert it to safetensors in Python first: model.save_pretrained(dir, safe_serialization=True) for a model or " +
                "adapter, or safetensors.torch.save_file(torch.load(path, weights_only=True), 'model.safetensors') for a bare state dict.");
    }

    /// <summary>
    /// Called where an expected file is missing: when <paramref name="path"/> is a pickle file, or a folder whose only
    /// weights are pickles, say so instead of "not found".
    /// </summary>
    public static void RefuseIfPickleOnly(string path)
    {
        if (File.Exists(path)) RefusePickle(path);
        if (!Directory.Exists(path) || Directory.EnumerateFiles(path, "*.safetensors").Any()) return;
        var pickle = Directory.EnumerateFiles(path).Where(IsPickle).Order(StringComparer.Ordinal).FirstOrDefault();
        if (pickle is not null) RefusePickle(pickle);
    }
}
