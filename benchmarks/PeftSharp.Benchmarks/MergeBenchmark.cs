using System.Diagnostics;
using PeftSharp.IO;
using PeftSharp.Merging;
using static TorchSharp.torch;

namespace PeftSharp.Benchmarks;

/// <summary>
/// Merge throughput and peak memory: three generated float32 checkpoints of ~1 GB (a base and two fine-tunes), merged
/// by each method in a fresh child process so that each peak RSS is its own. Throughput is input bytes read per second
/// of the whole merge (reading, merging, writing the sharded output); CPU seconds (user + system, all threads) are given
/// too, since wall time on a shared machine says as much about the neighbours as about the merge.
/// Usage: merge [--gb 1.0] [--dir DIR] [--methods ties,slerp,...] [--keep]
/// </summary>
internal static class MergeBenchmark
{
    public const string ChildVerb = "_merge-one";
    const long Rows = 2048, Cols = 2048;                          // 16 MB tensors, as in a 2k-wide model

    static readonly (string Method, string Parameters, string Models)[] Cases =
    [
        ("linear", "weight: 1.0", "[base, ft1, ft2]"),
        ("task_arithmetic", "weight: 0.5", "[ft1, ft2]"),
        ("magnitude_prune", "weight: 0.5, density: 0.5", "[ft1, ft2]"),
        ("ties", "weight: 0.5, density: 0.5", "[ft1, ft2]"),
        ("dare_linear", "weight: 0.5, density: 0.5", "[ft1, ft2]"),
        ("dare_ties", "weight: 0.5, density: 0.5", "[ft1, ft2]"),
        ("breadcrumbs", "weight: 0.5, density: 0.8, gamma: 0.01", "[ft1, ft2]"),
        ("breadcrumbs_ties", "weight: 0.5, density: 0.8, gamma: 0.01", "[ft1, ft2]"),
        ("slerp", "t: 0.5", "[ft1]"),
        ("model_stock", "filter_wise: false", "[ft1, ft2]"),
    ];

    public static int Run(string[] args)
    {
        double gb = double.Parse(Arg(args, "--gb") ?? "1.0", System.Globalization.CultureInfo.InvariantCulture);
        var dir = Arg(args, "--dir") ?? Path.Combine(Path.GetTempPath(), "peftsharp-merge-bench");
        var only = Arg(args, "--methods")?.Split(',');
        int tensors = (int)Math.Max(1, Math.Round(gb * 1e9 / (Rows * Cols * 4)));
        Directory.CreateDirectory(dir);
        var sw = Stopwatch.StartNew();
        long modelBytes = Generate(dir, tensors);
        Console.WriteLine($"inputs: 3 checkpoints x {modelBytes / 1e9:F2} GB ({tensors} tensors of [{Rows},{Cols}] float32), generated in {sw.Elapsed.TotalSeconds:F0} s");
        Console.WriteLine($"machine: {Environment.ProcessorCount} cores, torch threads {get_num_threads()}");
        Console.WriteLine();
        Console.WriteLine($"| {"method",-17} | {"inputs",7} | {"seconds",7} | {"GB/s",6} | {"CPU s",6} | {"peak RSS",9} |");
        Console.WriteLine($"|{new string('-', 19)}|{new string('-', 9)}|{new string('-', 9)}|{new string('-', 8)}|{new string('-', 8)}|{new string('-', 11)}|");
        foreach (var (method, parameters, models) in Cases.Where(c => only is null || only.Contains(c.Method)))
        {
            var yaml = Path.Combine(dir, $"{method}.yaml");
            File.WriteAllText(yaml, $"merge_method: {method}\nbase_model: base\nparameters: {{{parameters}}}\nmodels: {models}\n");
            int inputs = models.Count(c => c == ',') + 1 + (models.Contains("base") ? 0 : 1);
            var (seconds, cpu, peak, code) = Child(dir, yaml, Path.Combine(dir, "out"));
            var rate = code == 0 ? $"{inputs * modelBytes / 1e9 / seconds,6:F2}" : "failed";
            Console.WriteLine($"| {method,-17} | {inputs * modelBytes / 1e9,4:F1} GB | {seconds,7:F1} | {rate,6} | {cpu,6:F1} | {peak / 1e6,6:F0} MB |");
            Directory.Delete(Path.Combine(dir, "out"), recursive: true);
        }
        if (!args.Contains("--keep")) Directory.Delete(dir, recursive: true);
        return 0;
    }

    /// <summary>In the child process: one merge, nothing else, so its peak RSS is the merge's.</summary>
    public static int RunOne(string[] args)
    {
        ModelMerger.Run(MergeConfigYaml.Load(args[0]), args[1], new MergeOptions { MaxShardBytes = 2_000_000_000 });
        return 0;
    }

    static (double Seconds, double CpuSeconds, long PeakRss, int ExitCode) Child(string dir, string yaml, string output)
    {
        var psi = new ProcessStartInfo(Environment.ProcessPath!) { WorkingDirectory = dir };
        if (Path.GetFileNameWithoutExtension(Environment.ProcessPath) == "dotnet") psi.ArgumentList.Add(typeof(MergeBenchmark).Assembly.Location);
        foreach (var a in new[] { ChildVerb, yaml, output }) psi.ArgumentList.Add(a);
        var sw = Stopwatch.StartNew();
        using var p = Process.Start(psi)!;
        long peak = 0;
        double cpu = 0;
        // Polled while it runs (gone once it exits): VmHWM is the child's own high-water mark, CPU time only grows.
        while (!p.WaitForExit(20))
        {
            peak = Math.Max(peak, HighWaterMark(p.Id));
            try { p.Refresh(); cpu = p.TotalProcessorTime.TotalSeconds; }
            catch (Exception e) when (e is InvalidOperationException or System.ComponentModel.Win32Exception) { } // it just exited
        }
        return (sw.Elapsed.TotalSeconds, cpu, peak, p.ExitCode);
    }

    // base, ft1 = base + noise, ft2 = base + other noise; regenerated only when missing.
    static long Generate(string dir, int tensors)
    {
        var specs = Enumerable.Range(0, tensors)
            .Select(i => new TensorSpec($"model.layers.{i / 4}.{(i % 4 < 2 ? "self_attn" : "mlp")}.w{i % 4}.weight", ScalarType.Float32, [Rows, Cols]))
            .ToList();
        long bytes = specs.Sum(s => s.ByteLength);
        var names = new[] { "base", "ft1", "ft2" };
        if (names.All(n => File.Exists(Path.Combine(dir, n, Checkpoint.SingleFile)) && new FileInfo(Path.Combine(dir, n, Checkpoint.SingleFile)).Length > bytes))
            return bytes;
        var writers = names.Select(n => new ShardedCheckpointWriter(Path.Combine(dir, n), specs, long.MaxValue)).ToArray();
        using var g = new Generator(1, device: null);
        foreach (var s in specs)
        {
            using var scope = NewDisposeScope();
            var b = randn(s.Shape, generator: g) * 0.02;
            writers[0].Write(s.Name, b);
            writers[1].Write(s.Name, b + randn(s.Shape, generator: g) * 0.002);
            writers[2].Write(s.Name, b + randn(s.Shape, generator: g) * 0.002);
        }
        foreach (var w in writers) { w.Commit(); w.Dispose(); }
        return bytes;
    }

    static long HighWaterMark(int pid)
    {
        try
        {
            var line = File.ReadLines($"/proc/{pid}/status").FirstOrDefault(l => l.StartsWith("VmHWM:", StringComparison.Ordinal));
            return line is null ? 0 : long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
        }
        catch (IOException) { return 0; }
    }

    static string? Arg(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }
}
