using System.Diagnostics;

namespace PeftSharp.Benchmarks;

/// <summary>Timing and memory figures shared by the benchmarks.</summary>
internal static class Measure
{
    /// <summary>Median seconds of <paramref name="runs"/> timed calls after <paramref name="warmup"/> untimed ones.</summary>
    public static double Median(Action body, int runs = 5, int warmup = 1)
    {
        for (int i = 0; i < warmup; i++) body();
        var times = new List<double>();
        for (int i = 0; i < runs; i++)
        {
            var sw = Stopwatch.StartNew();
            body();
            times.Add(sw.Elapsed.TotalSeconds);
        }
        times.Sort();
        return times[times.Count / 2];
    }

    /// <summary>This process's peak resident memory so far (VmHWM), in MiB.</summary>
    public static double PeakRssMiB()
    {
        var line = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("VmHWM:", StringComparison.Ordinal));
        return line is null ? double.NaN : long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) / 1024.0;
    }

    /// <summary>The whole number after <paramref name="name"/> on the command line, or <paramref name="fallback"/>.</summary>
    public static int Arg(string[] args, string name, int fallback)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? int.Parse(args[i + 1]) : fallback;
    }

    public static string ModelDir(string name) =>
        Path.Combine(FindRoot(), name.StartsWith("tiny-") ? Path.Combine("tests", "fixtures", "peft-reference", "models", name) : Path.Combine("models", name));

    static string FindRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (Directory.Exists(Path.Combine(d.FullName, "models", "tinycode-3m"))) return d.FullName;
        throw new DirectoryNotFoundException("run the benchmarks from inside the repository");
    }
}
