namespace PeftSharp.Tests;

/// <summary>Finds files of this repository from wherever the test binaries run.</summary>
public static class Repo
{
    public static string Root { get; } = FindRoot();

    public static string Path(params string[] parts) => System.IO.Path.Combine([Root, .. parts]);

    public static string Fixture(params string[] parts) => System.IO.Path.Combine([Root, "tests", "fixtures", "peft-reference", .. parts]);

    static string FindRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (Directory.Exists(System.IO.Path.Combine(d.FullName, "tests", "fixtures"))) return d.FullName;
        throw new DirectoryNotFoundException("could not find the repository root (a folder with tests/fixtures) above " + AppContext.BaseDirectory);
    }
}
