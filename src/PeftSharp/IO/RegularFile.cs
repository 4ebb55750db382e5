using System.Runtime.InteropServices;

namespace PeftSharp.IO;

/// <summary>
/// The check made before any user-named file is opened: it must be a regular file. Opening a FIFO blocks until a
/// writer appears (forever, often), and a device such as /dev/zero never ends; both must fail at once, by name.
/// </summary>
internal static class RegularFile
{
    /// <summary>Throws <see cref="FileNotFoundException"/> or <see cref="IOException"/> unless <paramref name="path"/> is a regular file.</summary>
    public static void Require(string path)
    {
        var problem = Problem(path);
        if (problem is null) return;
        if (!File.Exists(path) && !Directory.Exists(path)) throw new FileNotFoundException($"{path}: {problem}", path);
        throw new IOException($"{path}: {problem}");
    }

    /// <summary>Null for a regular file, else what is wrong (without the path).</summary>
    internal static string? Problem(string path) => KindOf(path) switch
    {
        "regular file" => null,
        null => "file not found",
        var kind => $"is {kind}, not a regular file; PeftSharp reads only regular files " +
            "(a pipe or device can block forever or never end): copy the data to a file first",
    };

    /// <summary>"regular file", "a directory", "a FIFO (named pipe)", ..., or null when nothing is there.</summary>
    internal static string? KindOf(string path)
    {
        if (Directory.Exists(path)) return "a directory";
        if (!File.Exists(path)) return null;
        if (!OperatingSystem.IsLinux()) return "regular file";   // FIFOs and devices are only reachable as files on Unix
        int mode = StatMode(path);
        if (mode < 0) return "regular file";   // stat failed: let the open report why
        return (mode & 0xF000) switch
        {
            0x8000 => "regular file",
            0x1000 => "a FIFO (named pipe)",
            0x2000 => "a character device",
            0x6000 => "a block device",
            0xC000 => "a socket",
            _ => "not a regular file",
        };
    }

    // statx(2)'s buffer has one layout on every Linux architecture, unlike struct stat: stx_mode is the u16 at byte 28.
    static int StatMode(string path)
    {
        const int AtFdCwd = -100;
        const uint StatxType = 1;
        var buffer = new byte[256];
        var utf8Path = System.Text.Encoding.UTF8.GetBytes(path + "\0");
        if (Statx(AtFdCwd, utf8Path, 0, StatxType, buffer) != 0) return -1;
        return BitConverter.ToUInt16(buffer, 28);
    }

    [DllImport("libc", EntryPoint = "statx", SetLastError = true)]
    static extern int Statx(int dirfd, byte[] path, int flags, uint mask, byte[] buffer);
}
