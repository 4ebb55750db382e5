using System.Diagnostics;
using System.Globalization;

namespace PeftSharp.Benchmarks;

/// <summary>
/// One benchmark row in a child process of this program (so that its peak RSS is its own): the child prints one
/// <c>RESULT\t...</c> line, or <c>ERROR\t...</c>, or dies with an exception.
/// </summary>
internal static class ChildRun
{
    /// <summary>The RESULT line's tab-separated fields after "RESULT", or the reason there is none.</summary>
    public static (string[]? Fields, string? Error) Run(IEnumerable<string> args)
    {
        var psi = new ProcessStartInfo(Environment.ProcessPath!) { RedirectStandardOutput = true, RedirectStandardError = true };
        if (Path.GetFileNameWithoutExtension(Environment.ProcessPath) == "dotnet") psi.ArgumentList.Add(typeof(ChildRun).Assembly.Location);
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        var lines = p.StandardOutput.ReadToEnd().Split('\n');
        p.WaitForExit();
        var line = lines.FirstOrDefault(l => l.StartsWith("RESULT\t", StringComparison.Ordinal));
        if (line is not null) return (line.Split('\t')[1..], null);
        var err = lines.FirstOrDefault(l => l.StartsWith("ERROR\t", StringComparison.Ordinal))?[6..]
            ?? stderr.Result.Split('\n').FirstOrDefault(l => l.Contains("Exception") || l.StartsWith("error")) ?? $"exit {p.ExitCode}";
        return (null, err.Trim());
    }

    public static double Number(string field) => double.Parse(field, CultureInfo.InvariantCulture);
}
