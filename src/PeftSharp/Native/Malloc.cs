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

    /// <summary>
    /// Serves every allocation of <paramref name="bytes"/> or more from its own mapping, returned to the kernel when
    /// freed (glibc's M_MMAP_THRESHOLD; a no-op elsewhere). glibc otherwise raises that threshold to the size of each
    /// large block freed, and from then on keeps such blocks in the heap, where the temporaries of a ranking merge
    /// (della, sce) fragmented it: 301 MB resident instead of 254 MB for the same merge, at ~5% more CPU time.
    /// Process-wide and lasting: glibc has no way back to the adaptive threshold.
    /// </summary>
    public static void MapLargeBlocks(int bytes)
    {
        if (unavailable) return;
        try { _ = mallopt(MmapThreshold, bytes); }
        catch (Exception e) when (e is EntryPointNotFoundException or DllNotFoundException) { unavailable = true; }
    }

    const int MmapThreshold = -3;   // M_MMAP_THRESHOLD in malloc.h

    [DllImport("libc", EntryPoint = "mallopt")]
    static extern int mallopt(int param, int value);

    [DllImport("libc", EntryPoint = "malloc_trim")]
    static extern int malloc_trim(nuint pad);
}
