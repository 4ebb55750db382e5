namespace PeftSharp.Data;

/// <summary>
/// Where a record came from, so an error can say "train.jsonl:17" rather than "record 17".
/// <paramref name="Line"/> is 1-based; <paramref name="Unit"/> is "line" for text formats, "row" for Parquet,
/// and "file" for a whole text file (then <paramref name="Line"/> is ignored).
/// </summary>
public readonly record struct SourceRef(string File, long Line, string Unit = "line")
{
    public override string ToString() => Unit switch
    {
        "line" => $"{File}:{Line}",
        "file" => File,
        _ => $"{File} {Unit} {Line}",
    };
}

/// <summary>A record that cannot be used, named by file and line. <c>--skip-bad-records</c> counts and skips these.</summary>
public sealed class DataFormatException(SourceRef where, string problem)
    : Exception($"{where}: {problem}")
{
    public SourceRef Where { get; } = where;
    public string Problem { get; } = problem;
}

/// <summary>
/// One record as read from a file, before its shape is known. Field values are normalised to
/// string, long, double, bool, null, <c>IReadOnlyList&lt;object?&gt;</c> or <c>IReadOnlyDictionary&lt;string, object?&gt;</c>
/// whatever the format. A record the reader could not parse has <see cref="Fields"/> null and an <see cref="Error"/>.
/// </summary>
public sealed record RawRecord(IReadOnlyDictionary<string, object?>? Fields, SourceRef Source, string? Error = null)
{
    public static RawRecord Bad(SourceRef where, string error) => new(null, where, error);
}
