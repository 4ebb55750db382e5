namespace PeftSharp.Cli;

/// <summary>
/// How every command fails: one <c>error:</c> line on stderr and exit code 1, never a stack trace.
/// PEFTSHARP_DEBUG=1 lets exceptions through, stack and all.
/// </summary>
internal static class CliErrors
{
    public const int Failed = 1;

    static bool Debug => Environment.GetEnvironmentVariable("PEFTSHARP_DEBUG") == "1";

    public static int Run(Func<int> body, TextWriter error)
    {
        try { return body(); }
        catch (Exception e) when (!Debug)
        {
            error.WriteLine($"error: {Describe(e)}");
            return Failed;
        }
    }

    /// <summary>
    /// The message's first line: libtorch's errors carry a C++ backtrace after it. Exceptions that only a bug raises
    /// say so, since their message alone names nothing the user can fix.
    /// </summary>
    internal static string Describe(Exception e)
    {
        while (e is System.Reflection.TargetInvocationException or AggregateException or TypeInitializationException && e.InnerException is { } inner)
            e = inner;
        var first = e.Message.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).FirstOrDefault() ?? e.GetType().Name;
        return e is NullReferenceException or IndexOutOfRangeException or InvalidCastException or NotImplementedException
            ? $"{first} ({e.GetType().Name}: a bug in PeftSharp; PEFTSHARP_DEBUG=1 shows where, please report it)"
            : first;
    }
}
