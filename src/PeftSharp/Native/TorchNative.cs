using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using TorchSharp;

namespace PeftSharp.Native;

/// <summary>
/// Makes TorchSharp's native shim load on Linux systems whose libstdc++ predates GCC 13 (Debian 12,
/// Ubuntu 22.04). The shim needs GLIBCXX_3.4.32 only for a symbol it never calls, so when the plain load
/// fails we load a copy with that one requirement marked weak. Runs automatically when PeftSharp is first
/// used; call <see cref="EnsureLoadable"/> yourself before touching <c>torch</c> directly.
/// </summary>
public static class TorchNative
{
    const string ShimName = "LibTorchSharp";
    const string ShimFile = "libLibTorchSharp.so";
    const string MissingVersion = "GLIBCXX_3.4.32";
    static readonly object Gate = new();
    static bool done;
    static IntPtr patchedHandle;

#pragma warning disable CA2255 // a library module initializer is the point: it must run before TorchSharp loads its shim
    [ModuleInitializer]
#pragma warning restore CA2255
    internal static void Init()
    {
        try { EnsureLoadable(); }
        catch (Exception e) { Console.Error.WriteLine($"PeftSharp: could not prepare TorchSharp's native library: {e.Message}"); }
    }

    /// <summary>Where the patched copy was written, when one was needed (null otherwise).</summary>
    public static string? PatchedPath { get; private set; }

    /// <summary>Idempotent. Registers a resolver for TorchSharp's shim when the plain load cannot succeed.</summary>
    public static void EnsureLoadable()
    {
        lock (Gate)
        {
            if (done) return;
            done = true;
            if (!RuntimeInformation.IsOSPlatform(OSPlatform.Linux)) return;
            var original = FindShim();
            if (original is null) return; // TorchSharp will report its own error
            if (NativeLibrary.TryLoad(original, out _)) return; // this system's libstdc++ is new enough
            var bytes = File.ReadAllBytes(original);
            if (!ElfVersionPatch.NeedsStrictly(bytes, MissingVersion)) return; // failing for another reason
            ElfVersionPatch.MakeWeak(bytes, MissingVersion);
            var patched = WritePatchedCopy(original, bytes);

            // The copy lives elsewhere, so $ORIGIN no longer finds libtorch: load its dependencies first.
            var dir = Path.GetDirectoryName(original)!;
            foreach (var dep in new[] { "libc10.so", "libtorch_cpu.so", "libtorch.so" })
            {
                var p = Path.Combine(dir, dep);
                if (File.Exists(p)) NativeLibrary.TryLoad(p, out _);
            }
            patchedHandle = NativeLibrary.Load(patched);
            PatchedPath = patched;
            NativeLibrary.SetDllImportResolver(typeof(torch).Assembly, Resolve);
        }
    }

    static IntPtr Resolve(string name, Assembly assembly, DllImportSearchPath? path) =>
        name is ShimName or ShimFile ? patchedHandle : IntPtr.Zero;

    static string? FindShim()
    {
        var roots = new List<string> { AppContext.BaseDirectory };
        var tsDir = Path.GetDirectoryName(typeof(torch).Assembly.Location);
        if (!string.IsNullOrEmpty(tsDir))
        {
            roots.Add(tsDir);
            roots.Add(Path.GetFullPath(Path.Combine(tsDir, "..", "..")));
        }
        foreach (var root in roots)
        {
            foreach (var rel in new[] { ShimFile, Path.Combine("runtimes", "linux-x64", "native", ShimFile) })
            {
                var p = Path.Combine(root, rel);
                if (File.Exists(p)) return p;
            }
        }
        return null;
    }

    // One copy per distinct original (keyed by size and mtime), written atomically so concurrent processes agree.
    static string WritePatchedCopy(string original, byte[] bytes)
    {
        var info = new FileInfo(original);
        var key = $"{info.Length:x}-{info.LastWriteTimeUtc.Ticks:x}";
        var cache = Environment.GetEnvironmentVariable("PEFTSHARP_NATIVE_CACHE")
            ?? Path.Combine(Environment.GetEnvironmentVariable("XDG_CACHE_HOME")
                ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache"), "peftsharp", "native");
        var dir = Path.Combine(cache, key);
        var target = Path.Combine(dir, ShimFile);
        if (File.Exists(target) && new FileInfo(target).Length == bytes.Length) return target;
        Directory.CreateDirectory(dir);
        var tmp = target + $".{Environment.ProcessId}.tmp";
        File.WriteAllBytes(tmp, bytes);
        File.Move(tmp, target, overwrite: true);
        return target;
    }
}
