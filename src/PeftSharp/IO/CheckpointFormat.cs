namespace PeftSharp.IO;

internal static class CheckpointFormat
{
    static readonly string[] PickleExtensions = [".bin", ".pt", ".pth", ".ckpt", ".pkl"];

    /// <summary>Pickle checkpoints can run arbitrary code when loaded, so we never read them.</summary>
    public static void RefusePickle(string path)
    {
        var ext = Path.GetExtension(path).ToLowerInvariant();
        if (PickleExtensions.Contains(ext))
            throw new SafetensorsException(path,
                "this is a pickle checkpoint, which can execute arbitrary code when loaded, so PeftSharp refuses it. " +
                "Convert it to safetensors in Python first (model.save_pretrained(dir, safe_serialization=True)).");
    }
}
