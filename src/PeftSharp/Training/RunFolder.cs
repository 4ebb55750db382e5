using System.Text.RegularExpressions;

namespace PeftSharp.Training;

/// <summary>
/// The output folder across runs: a new run does not silently write over an earlier run's checkpoints and metrics,
/// and temporary checkpoint folders of killed runs are removed.
/// </summary>
internal static partial class RunFolder
{
    [GeneratedRegex(@"^\.checkpoint-\d+\.tmp(\d+)$")]
    private static partial Regex Temporary();

    /// <summary>
    /// Checks that a run may write into <paramref name="outputDir"/>. A folder that holds checkpoints or metrics of
    /// another run is refused unless resuming; with <paramref name="overwrite"/> those files are deleted first, so
    /// that a later <c>--resume latest</c> cannot pick a checkpoint of the old run.
    /// </summary>
    public static void Claim(string outputDir, bool resuming, bool overwrite)
    {
        RemoveStaleTemporaries(outputDir);
        if (resuming || !Directory.Exists(outputDir)) return;
        var checkpoints = TrainerCheckpoint.All(outputDir);
        var metrics = Path.Combine(outputDir, Trainer.MetricsFile);
        if (checkpoints.Count == 0 && !File.Exists(metrics)) return;
        if (!overwrite)
        {
            var what = checkpoints.Count > 0
                ? $"{checkpoints.Count} checkpoint(s), the newest {Path.GetFileName(checkpoints[^1].Path)}"
                : Trainer.MetricsFile;
            throw new ArgumentException($"{outputDir} already holds a training run ({what}); continue it with --resume, " +
                "start over with --overwrite-output-dir (deletes its checkpoints and metrics), or choose another --output-dir");
        }
        foreach (var (_, path) in checkpoints) Directory.Delete(path, recursive: true);
        foreach (var name in new[] { Trainer.MetricsFile, Trainer.LossCurveFile })
            File.Delete(Path.Combine(outputDir, name));
    }

    /// <summary>
    /// Deletes <c>.checkpoint-N.tmp&lt;pid&gt;</c> folders whose process is gone (killed while saving). A folder of a
    /// live process is left alone: another run may be saving into the same output folder right now.
    /// </summary>
    public static void RemoveStaleTemporaries(string outputDir)
    {
        if (!Directory.Exists(outputDir)) return;
        foreach (var dir in Directory.GetDirectories(outputDir))
        {
            var m = Temporary().Match(Path.GetFileName(dir));
            if (!m.Success || !int.TryParse(m.Groups[1].Value, out var pid)) continue;
            if (IO.Leftovers.IsAlive(pid)) continue; // our own pid counts as gone: we have not started saving yet
            try { Directory.Delete(dir, recursive: true); }
            catch (IOException) { } // removed by someone else meanwhile
        }
    }
}
