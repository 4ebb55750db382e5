using System.Text;
using System.Text.Json;

namespace PeftSharp.Data;

/// <summary>
/// Reads records from JSONL, JSON (an array of objects), CSV, Parquet, a single text file or a folder of text files.
/// The format is chosen by the extension; a <c>.json</c> file that does not start with '[' is read as JSONL,
/// as <c>datasets.load_dataset("json")</c> does.
/// </summary>
public static class DataReader
{
    public static IEnumerable<RawRecord> Read(string path)
    {
        if (Directory.Exists(path)) return TextFiles.ReadFolder(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"data file or folder not found: {path}", path);
        IO.RegularFile.Require(path);
        return Path.GetExtension(path).ToLowerInvariant() switch
        {
            ".jsonl" or ".ndjson" => Jsonl.Read(path),
            ".json" => StartsWithBracket(path) ? JsonArray.Read(path) : Jsonl.Read(path),
            ".csv" => Csv.Read(path),
            ".parquet" => ParquetRecords.Read(path),
            _ => TextFiles.ReadFile(path),
        };
    }

    static bool StartsWithBracket(string path)
    {
        using var r = new StreamReader(path, Encoding.UTF8, detectEncodingFromByteOrderMarks: true);
        int c;
        while ((c = r.Read()) >= 0 && char.IsWhiteSpace((char)c)) { }
        return c == '[';
    }

    /// <summary>Turns a parsed JSON value into the plain values <see cref="RawRecord"/> promises.</summary>
    internal static object? FromJson(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.String => e.GetString(),
        JsonValueKind.Number => e.TryGetInt64(out var l) ? (object)l : e.GetDouble(),
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        JsonValueKind.Null or JsonValueKind.Undefined => null,
        JsonValueKind.Array => e.EnumerateArray().Select(FromJson).ToList(),
        _ => e.EnumerateObject().ToDictionary(p => p.Name, p => FromJson(p.Value)),
    };

    internal static RawRecord FromJsonObject(JsonElement e, SourceRef where)
    {
        if (e.ValueKind != JsonValueKind.Object)
            return RawRecord.Bad(where, $"expected a JSON object (a record), found {e.ValueKind.ToString().ToLowerInvariant()}");
        try { return new RawRecord((IReadOnlyDictionary<string, object?>)FromJson(e)!, where); }
        catch (InvalidOperationException)
        {
            // System.Text.Json parses "\ud800" but will not make a .NET string of a lone surrogate (nor of invalid UTF-8).
            return RawRecord.Bad(where, NotUnicode);
        }
    }

    internal const string NotUnicode = "holds a string that is not valid Unicode (a lone surrogate escape such as \\ud800, or invalid UTF-8)";
}

/// <summary>One JSON object per line; blank lines are skipped. A line that is not valid UTF-8 is a bad record.</summary>
internal static class Jsonl
{
    public static IEnumerable<RawRecord> Read(string path)
    {
        foreach (var (line, text, error) in Utf8Lines.Read(path))
        {
            var where = new SourceRef(path, line);
            if (error is not null)
            {
                yield return RawRecord.Bad(where, error);
                continue;
            }
            if (string.IsNullOrWhiteSpace(text)) continue;
            RawRecord record;
            try
            {
                using var doc = JsonDocument.Parse(text);
                record = DataReader.FromJsonObject(doc.RootElement, where);
            }
            catch (JsonException e)
            {
                record = RawRecord.Bad(where, $"not valid JSON ({FirstSentence(e.Message)})");
            }
            yield return record;
        }
    }

    internal static string FirstSentence(string message)
    {
        var i = message.IndexOf(" Path:", StringComparison.Ordinal);
        return i > 0 ? message[..i].TrimEnd('.', ' ') : message;
    }
}

/// <summary>A JSON array of objects. Each record is named by the line its object starts on.</summary>
internal static class JsonArray
{
    public static IEnumerable<RawRecord> Read(string path)
    {
        var bytes = File.ReadAllBytes(path);
        var start = bytes.AsSpan().StartsWith("\uFEFF"u8) ? 3 : 0;
        var lineStarts = LineStarts(bytes);
        var records = new List<RawRecord>();
        var reader = new Utf8JsonReader(bytes.AsSpan(start), new JsonReaderOptions { CommentHandling = JsonCommentHandling.Skip });
        try
        {
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartArray)
                throw new DataFormatException(new SourceRef(path, 1), "expected a JSON array of records; for one record per line use a .jsonl file");
            while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
            {
                var where = new SourceRef(path, LineOf(lineStarts, start + reader.TokenStartIndex));
                using var doc = JsonDocument.ParseValue(ref reader);
                records.Add(DataReader.FromJsonObject(doc.RootElement, where)); // a string that is not Unicode spoils this record only
            }
        }
        catch (JsonException e)
        {
            // A syntax error leaves the rest of the array unreadable, so it stops the file whatever --skip-bad-records says.
            throw new DataFormatException(new SourceRef(path, (e.LineNumber ?? 0) + 1), $"not valid JSON ({Jsonl.FirstSentence(e.Message)})");
        }
        return records;
    }

    static long[] LineStarts(byte[] bytes)
    {
        var starts = new List<long> { 0 };
        for (var i = 0; i < bytes.Length; i++)
            if (bytes[i] == (byte)'\n') starts.Add(i + 1);
        return starts.ToArray();
    }

    static long LineOf(long[] lineStarts, long offset)
    {
        var i = Array.BinarySearch(lineStarts, offset);
        return (i >= 0 ? i : ~i - 1) + 1;
    }
}

/// <summary>Plain text: a file is one record <c>{"text": contents}</c>; a folder gives one record per text file, in name order.</summary>
internal static class TextFiles
{
    public static IEnumerable<RawRecord> ReadFolder(string folder)
    {
        var files = Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories)
            .Where(f => !Path.GetRelativePath(folder, f).Split(Path.DirectorySeparatorChar).Any(p => p.StartsWith('.')))
            .Order(StringComparer.Ordinal)
            .ToList();
        if (files.Count == 0) throw new FileNotFoundException($"the data folder {folder} holds no files");
        foreach (var f in files)
            yield return ReadFile(f).Single();
    }

    public static IEnumerable<RawRecord> ReadFile(string path)
    {
        var where = new SourceRef(path, 0, "file");
        IO.RegularFile.Require(path);
        var bytes = File.ReadAllBytes(path);
        // A NUL byte is the usual sign of a binary file that wandered into a text folder.
        if (Array.IndexOf(bytes, (byte)0) >= 0)
            return [RawRecord.Bad(where, "looks binary (it contains NUL bytes), not text")];
        string text;
        try { text = new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes); }
        catch (DecoderFallbackException) { return [RawRecord.Bad(where, "is not valid UTF-8 text")]; }
        return [new RawRecord(new Dictionary<string, object?> { ["text"] = text.TrimStart('\uFEFF') }, where)];
    }
}

/// <summary>
/// The lines of a UTF-8 file, each decoded strictly: a line with bytes that are not UTF-8 comes back with an error
/// instead of text, so that it can be named and skipped rather than silently turned into U+FFFD. A BOM is dropped.
/// </summary>
internal static class Utf8Lines
{
    static readonly UTF8Encoding Strict = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    public static IEnumerable<(long Line, string? Text, string? Error)> Read(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1);
        var chunk = new byte[1 << 16];
        using var pending = new MemoryStream();
        long line = 0;
        int n;
        while ((n = stream.Read(chunk, 0, chunk.Length)) > 0)
        {
            var start = 0;
            int newline;
            while ((newline = Array.IndexOf(chunk, (byte)'\n', start, n - start)) >= 0)
            {
                pending.Write(chunk, start, newline - start);
                start = newline + 1;
                var decoded = Decode(pending, ++line);
                pending.SetLength(0);
                yield return decoded;
            }
            pending.Write(chunk, start, n - start);
        }
        if (pending.Length > 0) yield return Decode(pending, ++line);
    }

    static (long, string?, string?) Decode(MemoryStream bytes, long line)
    {
        var buffer = bytes.GetBuffer();
        int offset = 0, length = (int)bytes.Length;
        if (line == 1 && length >= 3 && buffer[0] == 0xEF && buffer[1] == 0xBB && buffer[2] == 0xBF) (offset, length) = (3, length - 3);
        if (length > 0 && buffer[offset + length - 1] == (byte)'\r') length--;
        return TryDecode(buffer, offset, length, out var text, out var error) ? (line, text, null) : (line, null, error);
    }

    /// <summary>Strict UTF-8; on failure <paramref name="error"/> says which byte, as a record problem.</summary>
    public static bool TryDecode(byte[] bytes, int offset, int length, out string text, out string error)
    {
        try
        {
            text = Strict.GetString(bytes, offset, length);
            error = "";
            return true;
        }
        catch (DecoderFallbackException e)
        {
            var bad = e.BytesUnknown is { Length: > 0 } b ? $"byte 0x{b[0]:X2}" : "a byte";
            var at = e.Index >= 0 ? $" at byte {e.Index + 1} of the line" : "";
            (text, error) = ("", $"is not valid UTF-8 ({bad}{at}); re-save the file as UTF-8");
            return false;
        }
    }
}
