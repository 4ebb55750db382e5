using System.Collections;
using Parquet.Serialization;

namespace PeftSharp.Data;

/// <summary>
/// Parquet files as Hugging Face datasets writes them: one row per record; list columns (<c>input_ids</c>) and
/// lists of structs (<c>messages</c>) arrive as lists and dictionaries. Records are named by their 1-based row.
/// </summary>
internal static class ParquetRecords
{
    public static IEnumerable<RawRecord> Read(string path)
    {
        using var stream = File.OpenRead(path);
        DeserializationResult<Dictionary<string, object>> result;
        try
        {
            result = ParquetSerializer.DeserializeUntypedAsync(stream).GetAwaiter().GetResult();
        }
        catch (Exception e) when (e is IOException or InvalidDataException or NotSupportedException or ArgumentException or InvalidOperationException)
        {
            throw new DataFormatException(new SourceRef(path, 0, "file"), $"cannot be read as Parquet ({e.Message})");
        }
        var row = 0L;
        foreach (var r in result.Data)
        {
            row++;
            yield return new RawRecord(r.ToDictionary(kv => kv.Key, kv => Normalize(kv.Value)), new SourceRef(path, row, "row"));
        }
    }

    static object? Normalize(object? v) => v switch
    {
        null => null,
        string or long or double or bool => v,
        int i => (long)i,
        short s => (long)s,
        sbyte b => (long)b,
        byte b => (long)b,
        uint u => (long)u,
        float f => (double)f,
        ReadOnlyMemory<char> m => m.ToString(),
        byte[] bytes => System.Text.Encoding.UTF8.GetString(bytes),
        ReadOnlyMemory<byte> m => System.Text.Encoding.UTF8.GetString(m.Span),
        IDictionary d => d.Keys.Cast<object>().ToDictionary(k => k.ToString()!, k => Normalize(d[k])),
        IEnumerable e => e.Cast<object?>().Select(Normalize).ToList(),
        _ => v.ToString(),
    };
}
