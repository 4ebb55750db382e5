using System.Runtime.InteropServices;

namespace PeftSharp.Native;

/// <summary>
/// glibc keeps freed heap memory for reuse, and large tensors of mixed sizes freed in a loop fragment it: a streamed
/// merge of three 1 GB checkpoints that only ever holds a few tensors grew to 1.27 GB resident, 232 MB when trimmed
/// after each tensor. Trimming costs page faults (the merge took about twice the CPU time on our 2-core VM); keeping
/// a budget of free memory untrimmed did not save them, so every step trims.
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
