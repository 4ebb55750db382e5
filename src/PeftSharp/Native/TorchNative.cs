using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;
using TorchSharp;

namespace PeftSharp.Native;

/// <summary>
/// Gets TorchSharp's native shim loaded on Linux, before TorchSharp tries. Two things can stand in the way:
/// <list type="bullet">
/// <item>No libtorch next to the shim: a build with <c>-p:PeftSharpLibTorch=system</c> brings none. Then libtorch comes from
/// <c>PEFTSHARP_LIBTORCH_DIR</c> (its libraries are preloaded from there, CUDA ones included when present) or from the
/// dynamic loader's own search (<c>LD_LIBRARY_PATH</c>, ld.so.cache); when neither has it, the error says what to set.</item>
/// <item>A libstdc++ older than GCC 13 (Debian 12, Ubuntu 22.04). The shim needs GLIBCXX_3.4.32 only for a symbol it never
/// calls, so when the plain load fails we load a copy with that one requirement marked weak.</item>
/// </list>
/// Runs automatically when PeftSharp is first used (printing any failure to stderr); call <see cref="EnsureLoadable"/>
/// yourself before touching <c>torch</c> directly: it throws what went wrong.
/// </summary>
public static class TorchNative
{
    /// <summary>Folder holding libtorch.so (e.g. PyTorch's <c>site-packages/torch/lib</c>) for builds without a bundled libtorch.</summary>
    public const string LibTorchDirVariable = "PEFTSHARP_LIBTORCH_DIR";
    const string ShimName = "LibTorchSharp";
    const string ShimFile = "libLibTorchSharp.so";
    const string MissingVersion = "GLIBCXX_3.4.32";
    // Dependency order: each is loaded after what it needs, so the shim's DT_NEEDED entries match loaded sonames.
    static readonly string[] LibTorchFiles = ["libc10.so", "libc10_cuda.so", "libtorch_cpu.so", "libtorch_cuda.so", "libtorch.so"];
    static readonly string[] RequiredFiles = ["libc10.so", "libtorch_cpu.so", "libtorch.so"];
    static readonly object Gate = new();
    static bool done;
    static ExceptionDispatchInfo? failure;
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

    /// <summary>The folder libtorch was preloaded from (<see cref="LibTorchDirVariable"/>), or null when the loader found it itself.</summary>
    public static string? LibTorchDir { get; private set; }

    /// <summary>Idempotent: the first call does the work, later calls throw the first call's failure again, if any.</summary>
    public static void EnsureLoadable()
    {
        lock (Gate)
        {
            if (!done)
            {
                done = true;
                try { Prepare(); }
                catch (Exception e) { failure = ExceptionDispatchInfo.Capture(e); }
            }
            failure?.Throw();
        }
    }

    static void Prepare()
    {
        if (!RuntimeInformation.IsOSPlatform(OSPlatform.Linux)) return;
        var original = FindShim();
        if (original is null) return; // TorchSharp will report its own error
        var shimDir = Path.GetDirectoryName(original)!;
        var bundled = File.Exists(Path.Combine(shimDir, "libtorch.so"));
        if (Environment.GetEnvironmentVariable(LibTorchDirVariable) is { Length: > 0 } dir)
        {
            Preload(Path.GetFullPath(dir));
            LibTorchDir = Path.GetFullPath(dir);
        }
        else if (!bundled) RequireLoaderFindsLibTorch(original);

        if (NativeLibrary.TryLoad(original, out _)) return; // this system's libstdc++ is new enough
        var bytes = File.ReadAllBytes(original);
        if (!ElfVersionPatch.NeedsStrictly(bytes, MissingVersion)) return; // failing for another reason: TorchSharp reports it
        ElfVersionPatch.MakeWeak(bytes, MissingVersion);
        var patched = WritePatchedCopy(original, bytes);

        // The copy lives elsewhere, so $ORIGIN no longer finds a bundled libtorch: load its dependencies first.
        if (bundled && LibTorchDir is null) Preload(shimDir);
        patchedHandle = NativeLibrary.Load(patched);
        PatchedPath = patched;
        NativeLibrary.SetDllImportResolver(typeof(torch).Assembly, Resolve);
    }

    /// <summary>Loads libtorch's libraries from <paramref name="dir"/> by full path, in dependency order.</summary>
    static void Preload(string dir)
    {
        var missing = RequiredFiles.Where(f => !File.Exists(Path.Combine(dir, f))).ToList();
        if (missing.Count > 0)
            throw new DllNotFoundException($"{LibTorchDirVariable} is '{dir}', which has no {string.Join(", ", missing)}: " +
                "point it at libtorch's lib folder (for PyTorch: <site-packages>/torch/lib).");
        foreach (var file in LibTorchFiles)
        {
            var path = Path.Combine(dir, file);
            if (!File.Exists(path)) continue;
            try { NativeLibrary.Load(path); }
            catch (DllNotFoundException e)
            {
                var hint = file.Contains("cuda") ? " Its CUDA libraries must be findable too: add PyTorch's nvidia/*/lib folders to LD_LIBRARY_PATH." : "";
                throw new DllNotFoundException($"could not load {path} (from {LibTorchDirVariable}): {LoaderReason(e)}.{hint}", e);
            }
        }
    }

    /// <summary>No bundled libtorch and no <see cref="LibTorchDirVariable"/>: the dynamic loader must find it, or we say what to set.</summary>
    static void RequireLoaderFindsLibTorch(string shim)
    {
        try { NativeLibrary.Load("libtorch.so"); }
        catch (DllNotFoundException e)
        {
            throw new DllNotFoundException(
                $"libtorch not found. TorchSharp's shim {shim} has no libtorch beside it (a build with -p:PeftSharpLibTorch=system bundles none), " +
                $"{LibTorchDirVariable} is not set and the dynamic loader cannot find libtorch.so ({LoaderReason(e)}). Set {LibTorchDirVariable} to " +
                "libtorch's lib folder, e.g. PyTorch's: export " + LibTorchDirVariable +
                "=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), \"lib\"))'), or add that folder to " +
                "LD_LIBRARY_PATH, or build with the default -p:PeftSharpLibTorch=cpu, which bundles the CPU libtorch.", e);
        }
    }

    // .NET wraps the loader's own words (dlerror) in a paragraph of advice; keep the loader's words.
    static string LoaderReason(Exception e) =>
        e.Message.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).LastOrDefault(l => l.Contains(".so")) ?? e.Message;

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
