using System.Text;

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
        using var reader = new StreamReader(path, Encoding.UTF8, detectEncodingFromByteOrderMarks: true);
        var parser = new Parser(reader, path);
        var header = parser.Next(out _) ?? throw new DataFormatException(new SourceRef(path, 1), "the CSV file is empty (it needs a header row)");
        var duplicate = header.GroupBy(h => h).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null) throw new DataFormatException(new SourceRef(path, 1), $"the header names column '{duplicate.Key}' twice");
        while (parser.Next(out var line) is { } fields)
        {
            var where = new SourceRef(path, line);
            if (fields.Count == 1 && fields[0].Length == 0) continue; // a blank line
            if (fields.Count != header.Count)
            {
                yield return RawRecord.Bad(where, $"has {fields.Count} fields but the header has {header.Count}");
                continue;
            }
            var record = new Dictionary<string, object?>(header.Count);
            for (var i = 0; i < header.Count; i++) record[header[i]] = fields[i];
            yield return new RawRecord(record, where);
        }
    }

    /// <summary>A character-level state machine; it tracks the line number so records can be named.</summary>
    sealed class Parser(TextReader reader, string path)
    {
        long line = 1;

        /// <summary>The next record's fields, or null at the end of the file; <paramref name="startLine"/> is where it began.</summary>
        public List<string>? Next(out long startLine)
        {
            startLine = line;
            if (reader.Peek() < 0) return null;
            var fields = new List<string>();
            var field = new StringBuilder();
            var quoted = false;      // inside a quoted field
            var wasQuoted = false;   // the current field was quoted (text after its closing quote is an error)
            while (true)
            {
                var c = reader.Read();
                if (c < 0)
                {
                    if (quoted) throw new DataFormatException(new SourceRef(path, startLine), "a quoted field is never closed (a missing '\"')");
                    fields.Add(field.ToString());
                    return fields;
                }
                var ch = (char)c;
                if (quoted)
                {
                    if (ch == '"')
                    {
                        if (reader.Peek() == '"') { reader.Read(); field.Append('"'); }
                        else quoted = false;
                    }
                    else
                    {
                        if (ch == '\n') line++;
                        field.Append(ch);
                    }
                    continue;
                }
                switch (ch)
                {
                    case ',':
                        fields.Add(field.ToString());
                        field.Clear();
                        wasQuoted = false;
                        break;
                    case '\r' when reader.Peek() == '\n':
                        break; // the '\n' ends the record
                    case '\n':
                        line++;
                        fields.Add(field.ToString());
                        return fields;
                    case '"' when field.Length == 0 && !wasQuoted:
                        quoted = wasQuoted = true;
                        break;
                    default:
                        if (wasQuoted)
                            throw new DataFormatException(new SourceRef(path, line), $"text after a closing quote ('{ch}'); a quote inside a quoted field is written \"\"");
                        field.Append(ch);
                        break;
                }
            }
        }
    }
}
