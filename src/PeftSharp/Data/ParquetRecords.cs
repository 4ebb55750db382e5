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
        CheckFooter(path, stream);
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

    // A Parquet file ends with its footer, the footer's 4-byte length and "PAR1". A length past the file would make the
    // reader allocate whatever it says (gigabytes) before failing without naming the file.
    static void CheckFooter(string path, Stream stream)
    {
        var where = new SourceRef(path, 0, "file");
        long length = stream.Length;
        Span<byte> head = stackalloc byte[4], tail = stackalloc byte[8];
        if (length < 12) throw new DataFormatException(where, $"cannot be read as Parquet: {length} bytes is too short for a Parquet file");
        stream.ReadExactly(head);
        stream.Seek(-8, SeekOrigin.End);
        stream.ReadExactly(tail);
        stream.Seek(0, SeekOrigin.Begin);
        if (!head.SequenceEqual("PAR1"u8) || !tail[4..].SequenceEqual("PAR1"u8))
            throw new DataFormatException(where, "cannot be read as Parquet: it does not start and end with the Parquet magic \"PAR1\"");
        uint footer = BitConverter.ToUInt32(tail[..4]);
        if (footer > length - 12)
            throw new DataFormatException(where, $"cannot be read as Parquet: its footer length {footer} runs past the {length}-byte file");
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
