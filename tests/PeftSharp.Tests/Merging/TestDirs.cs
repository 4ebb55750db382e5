namespace PeftSharp.Tests.Merging;

internal static class TestDirs
{
    public static string New()
    {
        var d = Path.Combine(Path.GetTempPath(), "peftsharp-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(d);
        return d;
    }
}
