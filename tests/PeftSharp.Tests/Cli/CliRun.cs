using CliProgram = PeftSharp.Cli.PeftSharpCli;

namespace PeftSharp.Tests.Cli;

/// <summary>Runs a <c>peftsharp</c> command line in this process, capturing what it writes.</summary>
internal static class CliRun
{
    public sealed record Result(int Code, string Out, string Err);

    public static Result Run(params string[] args)
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        int code = CliProgram.Run(args, output, error);
        return new Result(code, output.ToString(), error.ToString());
    }

    /// <summary>The failure contract: exit code 1, nothing on stdout, one "error:" line on stderr that names <paramref name="names"/>.</summary>
    public static string AssertError(this Result r, params string[] names)
    {
        Assert.True(r.Code == 1, $"exit code {r.Code}; stdout: {r.Out}; stderr: {r.Err}");
        Assert.Equal("", r.Out);
        var lines = r.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 1, $"expected one error line, got:\n{r.Err}");
        Assert.StartsWith("error: ", lines[0]);
        foreach (var name in names) Assert.Contains(name, lines[0]);
        return lines[0];
    }

    /// <summary>A folder that does not exist: a command that checks its options first fails on them, not on this.</summary>
    public static readonly string Nowhere = Path.Combine(Path.GetTempPath(), "peftsharp-tests", "no-such-folder-" + Guid.NewGuid().ToString("N"));

    public static string TinyCode => Repo.Path("models", "tinycode-3m");
}
