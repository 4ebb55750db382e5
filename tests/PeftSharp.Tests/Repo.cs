namespace PeftSharp.Tests;

/// <summary>Finds files of the repository (fixtures, models) from wherever the test binaries run.</summary>
public static class Repo
{
    static readonly Lazy<string> root = new(FindRoot);

    /// <summary>The repository root: the nearest ancestor of the test binaries that holds <c>tests/fixtures</c>.</summary>
    public static string Root => root.Value;

    /// <summary>A path below the repository root, e.g. <c>Repo.Path("models", "tinycode-3m")</c>.</summary>
    public static string Path(params string[] parts) => System.IO.Path.Combine([Root, .. parts]);

    static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
        {
            if (Directory.Exists(System.IO.Path.Combine(dir.FullName, "tests", "fixtures")))
                return dir.FullName;
        }
        throw new DirectoryNotFoundException(
            $"no folder containing tests/fixtures above {AppContext.BaseDirectory}: run the tests from inside the repository");
    }
}
