using System.Runtime.InteropServices;

namespace PeftSharp.IO;

/// <summary>
/// Reading into a newly allocated tensor is dominated not by the copy but by first-touch page faults, one per 4 KiB
/// page. Asking for transparent huge pages first makes that one fault per 2 MiB; where the kernel says no, nothing
/// changes but speed.
/// </summary>
internal static class FreshMemory
{
    const int MadvHugePage = 14;
    const long HugePage = 2L << 20;

    public static unsafe void PreferHugePages(byte* start, long length)
    {
        if (!OperatingSystem.IsLinux() || length < 2 * HugePage) return;
        long page = Environment.SystemPageSize;
        long begin = ((long)start + page - 1) / page * page, end = ((long)start + length) / page * page;
        try { _ = Madvise((nint)begin, (nuint)(end - begin), MadvHugePage); }
        catch (EntryPointNotFoundException) { }
        catch (DllNotFoundException) { }
    }

    [DllImport("libc", EntryPoint = "madvise")]
    static extern int Madvise(nint address, nuint length, int advice);
}
