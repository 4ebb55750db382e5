namespace PeftSharp.Data;

/// <summary>
/// CSV as RFC 4180 writes it: a header row, comma separators, fields optionally in double quotes with "" for a quote,
/// and line breaks allowed inside quotes. Values stay strings; the record parser converts the fields it needs.
/// Each record is named by the line it starts on.
/// </summary>
internal static class Csv
{
    public static IEnumerable<RawRecord> Read(string path)
    {
        using var stream = new BufferedStream(new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1), 1 << 16);
        var parser = new Parser(stream, path);
        var headerBytes = parser.Next(out _) ?? throw new DataFormatException(new SourceRef(path, 1), "the CSV file is empty (it needs a header row)");
        var header = Decode(headerBytes, null, out var headerError)
            ?? throw new DataFormatException(new SourceRef(path, 1), $"the header row {headerError}");
        var duplicate = header.GroupBy(h => h).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null) throw new DataFormatException(new SourceRef(path, 1), $"the header names column '{duplicate.Key}' twice");
        while (parser.Next(out var line) is { } raw)
        {
            var where = new SourceRef(path, line);
            if (raw.Count == 1 && raw[0].Length == 0) continue; // a blank line
            if (raw.Count != header.Count)
            {
                yield return RawRecord.Bad(where, $"has {raw.Count} fields but the header has {header.Count}");
                continue;
            }
            var fields = Decode(raw, header, out var error);
            if (fields is null)
            {
                yield return RawRecord.Bad(where, error);
                continue;
            }
            var record = new Dictionary<string, object?>(header.Count);
            for (var i = 0; i < header.Count; i++) record[header[i]] = fields[i];
            yield return new RawRecord(record, where);
        }
    }

    /// <summary>Each field as strict UTF-8, or null with the first bad field named in <paramref name="error"/>.</summary>
    static List<string>? Decode(List<byte[]> raw, List<string>? header, out string error)
    {
        var fields = new List<string>(raw.Count);
        for (var i = 0; i < raw.Count; i++)
        {
            if (!Utf8Lines.TryDecode(raw[i], 0, raw[i].Length, out var text, out error))
            {
                error = header is null ? error : $"column '{header[i]}' {error}";
                return null;
            }
            fields.Add(text);
        }
        error = "";
        return fields;
    }

    /// <summary>
    /// A byte-level state machine: the structural characters (comma, quote, CR, LF) are ASCII, which never occurs inside
    /// a multi-byte UTF-8 sequence, so fields can be cut before they are decoded, and a field that is not UTF-8 spoils
    /// its record only. It tracks the line number so records can be named.
    /// </summary>
    sealed class Parser(Stream input, string path)
    {
        long line = 1;
        int peeked = -2; // -2: nothing peeked
        bool started;

        int Read()
        {
            if (peeked != -2) { var b = peeked; peeked = -2; return b; }
            return input.ReadByte();
        }

        int Peek() => peeked != -2 ? peeked : peeked = input.ReadByte();

        /// <summary>The next record's fields as bytes, or null at the end of the file; <paramref name="startLine"/> is where it began.</summary>
        public List<byte[]>? Next(out long startLine)
        {
            if (!started)
            {
                started = true;
                if (Peek() == 0xEF) // a UTF-8 BOM
                {
                    Read();
                    if (Read() != 0xBB || Read() != 0xBF) throw new DataFormatException(new SourceRef(path, 1), "starts with a broken byte-order mark; re-save the file as UTF-8");
                }
            }
            startLine = line;
            if (Peek() < 0) return null;
            var fields = new List<byte[]>();
            var field = new MemoryStream();
            var quoted = false;      // inside a quoted field
            var wasQuoted = false;   // the current field was quoted (text after its closing quote is an error)
            while (true)
            {
                var c = Read();
                if (c < 0)
                {
                    if (quoted) throw new DataFormatException(new SourceRef(path, startLine), "a quoted field is never closed (a missing '\"')");
                    fields.Add(field.ToArray());
                    return fields;
                }
                if (quoted)
                {
                    if (c == '"')
                    {
                        if (Peek() == '"') { Read(); field.WriteByte((byte)'"'); }
                        else quoted = false;
                    }
                    else
                    {
                        if (c == '\n') line++;
                        field.WriteByte((byte)c);
                    }
                    continue;
                }
                switch (c)
                {
                    case ',':
                        fields.Add(field.ToArray());
                        field.SetLength(0);
                        wasQuoted = false;
                        break;
                    case '\r' when Peek() == '\n':
                        break; // the '\n' ends the record
                    case '\n':
                        line++;
                        fields.Add(field.ToArray());
                        return fields;
                    case '"' when field.Length == 0 && !wasQuoted:
                        quoted = wasQuoted = true;
                        break;
                    default:
                        if (wasQuoted)
                        {
                            var what = c < 0x80 ? $"'{(char)c}'" : $"byte 0x{c:X2}";
                            throw new DataFormatException(new SourceRef(path, line), $"text after a closing quote ({what}); a quote inside a quoted field is written \"\"");
                        }
                        field.WriteByte((byte)c);
                        break;
                }
            }
        }
    }
}
