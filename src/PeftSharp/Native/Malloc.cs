using System.Runtime.InteropServices;

namespace PeftSharp.Native;

/// <summary>
/// glibc keeps freed heap memory for reuse, and large tensors freed in a loop leave the heap fragmented: a streamed
/// merge that only ever holds a few tensors grew to the size of a whole model in resident memory (951 MB instead of
/// 344 MB on an 805 MB merge). Returning free pages to the kernel after each step keeps it bounded.
/// </summary>
public static class Malloc
{
    static bool unavailable = !RuntimeInformation.IsOSPlatform(OSPlatform.Linux);

    /// <summary>Gives unused heap pages back to the kernel (glibc's malloc_trim); a no-op elsewhere.</summary>
    public static void Trim()
    {
        if (unavailable) return;
        try { _ = malloc_trim(0); } // returns whether memory was released: nothing to act on
        catch (Exception e) when (e is EntryPointNotFoundException or DllNotFoundException) { unavailable = true; } // musl, ...
    }

    [DllImport("libc", EntryPoint = "malloc_trim")]
    static extern int malloc_trim(nuint pad);
}
