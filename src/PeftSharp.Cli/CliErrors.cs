namespace PeftSharp.Cli;

/// <summary>Turns exceptions into one readable line and exit code 1; PEFTSHARP_DEBUG=1 shows the stack.</summary>
internal static class CliErrors
{
    public static int Run(Func<int> body)
    {
        try { return body(); }
        catch (Exception e) when (Environment.GetEnvironmentVariable("PEFTSHARP_DEBUG") != "1")
        {
            var inner = e is System.Reflection.TargetInvocationException { InnerException: { } i } ? i : e;
            Console.Error.WriteLine($"error: {inner.Message}");
            return 1;
        }
    }

    /// <summary>Wraps a command action so its exceptions get the same treatment.</summary>
    public static Func<System.CommandLine.ParseResult, int> Guard(Func<System.CommandLine.ParseResult, int> action) =>
        r => Run(() => action(r));
}
