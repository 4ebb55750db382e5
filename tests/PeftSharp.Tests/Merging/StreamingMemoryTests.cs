using System.Diagnostics;
using PeftSharp.IO;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Merging;

/// <summary>
/// The merge streams: merging three checkpoints of 268 MB each (805 MB) in a child process (the CLI) keeps its peak
/// anonymous memory (RssAnon: what the process allocates, libtorch's own heap included) under 200 MB, less than one input
/// model, for task vectors and for the methods that hold every model's tensor at once (karcher iterates over them).
/// File-backed pages are left out: how much of libtorch's 460 MB text is resident depends on the kernel (huge pages
/// collapsed for a library run often added 30 MB to VmHWM between two checkouts of the same commit), and mapped inputs
/// are page cache. Measured on this data (2026-12-02): task_arithmetic 115 MB, karcher 117 MB. della, della_linear and
/// sce rank every value, which is slow, so they merge two tensors of the same size: della 125 MB, della_linear 123 MB,
/// sce 156 MB (their temporaries were cut and large blocks mapped, see Native.Malloc.MapLargeBlocks).
/// </summary>
public class StreamingMemoryTests(StreamingMemoryTests.Inputs inputs, StreamingMemoryTests.FewInputs few, ITestOutputHelper output)
    : IClassFixture<StreamingMemoryTests.Inputs>, IClassFixture<StreamingMemoryTests.FewInputs>
{
    const long Rows = 2048, Cols = 1024;                         // 8 MB per float32 tensor, 256 MB per model
    const long LimitBytes = 200_000_000;

    /// <summary>The three input models of <paramref name="tensors"/> tensors, written once for all the methods.</summary>
    public abstract class InputModels : IDisposable
    {
        public int Tensors { get; }
        public string Dir { get; } = TestDirs.New();
        public long Bytes { get; }
        protected InputModels(int tensors) => Bytes = WriteInputs(Dir, Tensors = tensors);
        public void Dispose() => Directory.Delete(Dir, recursive: true);
    }

    /// <summary>32 tensors: 805 MB in all, 4 times the limit.</summary>
    public sealed class Inputs() : InputModels(32);

    /// <summary>
    /// 2 tensors of the same size, for the methods that rank every value (della's per-row sort, sce's variance
    /// selection): their peak comes with every tensor, and 32 tensors of them take a minute on two cores.
    /// </summary>
    public sealed class FewInputs() : InputModels(2);

    [Theory]
    [InlineData("task_arithmetic", "weight: 0.5")]
    [InlineData("karcher", "max_iter: 10")]
    public void A_merge_larger_than_the_memory_limit_completes_within_it(string method, string parameters)
    {
        long inputBytes = Merge(inputs, method, parameters);
        Assert.True(inputBytes > 4 * LimitBytes);
    }

    [Theory]
    [InlineData("della", "density: 0.5, weight: 0.5")]
    [InlineData("della_linear", "density: 0.5, weight: 0.5")]
    [InlineData("sce", "select_topk: 0.5")]
    public void The_ranking_methods_hold_a_few_tensors_at_a_time_too(string method, string parameters) => Merge(few, method, parameters);

    // Merges base, a and b with the method in a child process (the CLI) and checks its peak memory; returns the input size.
    long Merge(InputModels models, string method, string parameters)
    {
        var dir = models.Dir;
        long inputBytes = models.Bytes;
        var outName = $"out-{method}";
        try
        {
            File.WriteAllText(Path.Combine(dir, $"{method}.yaml"), $$"""
                merge_method: {{method}}
                base_model: base
                parameters: {{{parameters}}}
                models: [a, b]
                """);
            var (exitCode, log, peak) = RunCli(dir, "merge-models", "--config", $"{method}.yaml", "--out", outName, "--out-shard-size", "100M", "-q");
            output.WriteLine(log);
            output.WriteLine($"{method}: inputs {inputBytes / 1e6:F0} MB, child peak anonymous memory {peak / 1e6:F0} MB, limit {LimitBytes / 1e6:F0} MB");
            Assert.Equal(0, exitCode);
            Assert.True(peak > 0, "peak memory was not measured");
            Assert.True(peak < LimitBytes, $"peak anonymous memory {peak / 1e6:F0} MB is over the {LimitBytes / 1e6:F0} MB limit (inputs: {inputBytes / 1e6:F0} MB)");
            using var merged = Checkpoint.Open(Path.Combine(dir, outName));
            Assert.Equal(models.Tensors, merged.Names.Count);
            Assert.True(merged.Files.Count >= (models.Tensors >= 32 ? 3 : 1), "sharded output");
            return inputBytes;
        }
        finally
        {
            if (Directory.Exists(Path.Combine(dir, outName))) Directory.Delete(Path.Combine(dir, outName), recursive: true);
        }
    }

    // base, and two fine-tunes of it; written tensor by tensor so this process stays small too.
    static long WriteInputs(string dir, int tensors)
    {
        var specs = Enumerable.Range(0, tensors).Select(i => new TensorSpec($"model.layers.{i}.mlp.up_proj.weight", ScalarType.Float32, [Rows, Cols])).ToList();
        var writers = new[] { "base", "a", "b" }.Select(n => new ShardedCheckpointWriter(Path.Combine(dir, n), specs, 1L << 40)).ToArray();
        using var g = new Generator(1, device: null);
        foreach (var s in specs)
        {
            using var scope = NewDisposeScope();
            var b = randn(s.Shape, generator: g);
            writers[0].Write(s.Name, b);
            writers[1].Write(s.Name, b * 1.01);     // cheap to make: the numbers do not matter here, the sizes do
            writers[2].Write(s.Name, b - 0.001);
        }
        foreach (var w in writers) { w.Commit(); w.Dispose(); }
        return 3 * specs.Sum(s => s.ByteLength);
    }

    internal static (int ExitCode, string Log, long PeakAnon) RunCli(string workDir, params string[] args) => RunCli(workDir, null, args);

    /// <param name="environment">variables set for the child (e.g. OMP_NUM_THREADS), on top of this process's.</param>
    internal static (int ExitCode, string Log, long PeakAnon) RunCli(string workDir, IReadOnlyDictionary<string, string>? environment, params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { WorkingDirectory = workDir, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var (k, v) in environment ?? new Dictionary<string, string>()) psi.Environment[k] = v;
        psi.ArgumentList.Add(CliDll());
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        // Polled every 20 ms: a merge that does not stream holds its excess for as long as the models are open, so a poll
        // sees it. getrusage(RUSAGE_CHILDREN) cannot stand in: it counts the forked copy of this test process before
        // exec, whose resident pages are this process's.
        long peak = 0;
        while (!p.WaitForExit(20)) peak = Math.Max(peak, Status(p.Id, "RssAnon:"));
        p.WaitForExit();
        return (p.ExitCode, stdout.Result + stderr.Result, peak);
    }

    static string CliDll()
    {
        // tests/PeftSharp.Tests/bin/<Configuration>/<tfm>/ -> src/PeftSharp.Cli/bin/<Configuration>/<tfm>/
        var tfmDir = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        var dll = Repo.Path("src", "PeftSharp.Cli", "bin", tfmDir.Parent!.Name, tfmDir.Name, "PeftSharp.Cli.dll");
        Assert.True(File.Exists(dll), $"build the CLI first: {dll} is missing");
        return dll;
    }

    // A field of /proc/PID/status in bytes (0 once the process is gone).
    static long Status(int pid, string field)
    {
        try
        {
            var line = File.ReadLines($"/proc/{pid}/status").FirstOrDefault(l => l.StartsWith(field, StringComparison.Ordinal));
            return line is null ? 0 : long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
        }
        catch (IOException) { return 0; }
    }
}
