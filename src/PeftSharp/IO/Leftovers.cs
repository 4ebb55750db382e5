using System.Diagnostics;

namespace PeftSharp.IO;

/// <summary>
/// What a killed run leaves: <c>&lt;file&gt;.tmp&lt;pid&gt;</c> beside a file being written and <c>&lt;folder&gt;.partial-&lt;pid&gt;</c>
/// beside a folder being staged. The next write of the same target removes those whose process is gone.
/// </summary>
internal static class Leftovers
{
    public static void RemoveStaleTemps(string path)
    {
        foreach (var f in Matching(path, ".tmp"))
            try { File.Delete(f); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    public static void RemoveStalePartials(string folder)
    {
        foreach (var d in Matching(folder, ".partial-"))
            try { Directory.Delete(d, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    // Entries named <target><marker><pid> whose process is not running. Our own pid counts as gone: this process
    // has not started the write yet, so such an entry is from an earlier run that had the same pid.
    static List<string> Matching(string target, string marker)
    {
        var full = Path.GetFullPath(target).TrimEnd(Path.DirectorySeparatorChar);
        var dir = Path.GetDirectoryName(full);
        if (dir is null || !Directory.Exists(dir)) return [];
        var prefix = Path.GetFileName(full) + marker;
        return Directory.GetFileSystemEntries(dir, prefix + "*")
            .Where(e => int.TryParse(Path.GetFileName(e)[prefix.Length..], System.Globalization.NumberStyles.None, null, out int pid) && !IsAlive(pid))
            .ToList();
    }

    internal static bool IsAlive(int pid)
    {
        if (pid == Environment.ProcessId) return false;
        try
        {
            using var p = Process.GetProcessById(pid);
            return !p.HasExited;
        }
        catch (ArgumentException) { return false; }
        catch (InvalidOperationException) { return false; }
    }
}
