using System.Globalization;
using System.Text;

namespace PeftSharp.Tokenization.Jinja;

/// <summary>
/// Python's <c>json.dumps(v, ensure_ascii=False, indent=indent, sort_keys=sortKeys)</c>, which transformers'
/// <c>tojson</c> filter calls: ", " and ": " separators without indent, "," and ": " with it; non-ASCII text verbatim.
/// </summary>
internal static class PyJson
{
    public static string Dumps(object? v, int? indent, bool sortKeys, int line)
    {
        var sb = new StringBuilder();
        Write(sb, v, indent, sortKeys, 0, line);
        return sb.ToString();
    }

    static void Write(StringBuilder sb, object? v, int? indent, bool sortKeys, int depth, int line)
    {
        switch (v)
        {
            case null: sb.Append("null"); break;
            case bool b: sb.Append(b ? "true" : "false"); break;
            case long l: sb.Append(l.ToString(CultureInfo.InvariantCulture)); break;
            case double d:
                sb.Append(double.IsNaN(d) ? "NaN" : double.IsInfinity(d) ? (d > 0 ? "Infinity" : "-Infinity") : Values.FloatRepr(d));
                break;
            case string s: WriteString(sb, s); break;
            case List<object?> list:
                WriteItems(sb, '[', ']', list, indent, depth, item => Write(sb, item, indent, sortKeys, depth + 1, line));
                break;
            case Dictionary<string, object?> dict:
                IEnumerable<KeyValuePair<string, object?>> pairs = sortKeys ? dict.OrderBy(kv => kv.Key, StringComparer.Ordinal) : dict;
                WriteItems(sb, '{', '}', pairs.ToList(), indent, depth, kv =>
                {
                    WriteString(sb, kv.Key);
                    sb.Append(": ");
                    Write(sb, kv.Value, indent, sortKeys, depth + 1, line);
                });
                break;
            case Namespace ns: Write(sb, ns.Attributes, indent, sortKeys, depth, line); break;
            default: throw new TemplateException($"line {line}: tojson cannot serialise {Values.TypeName(v)}");
        }
    }

    static void WriteItems<T>(StringBuilder sb, char open, char close, IReadOnlyList<T> items, int? indent, int depth, Action<T> write)
    {
        sb.Append(open);
        if (items.Count == 0) { sb.Append(close); return; }
        for (int i = 0; i < items.Count; i++)
        {
            if (i > 0) sb.Append(indent is null ? ", " : ",");
            if (indent is { } n) sb.Append('\n').Append(' ', n * (depth + 1));
            write(items[i]);
        }
        if (indent is { } m) sb.Append('\n').Append(' ', m * depth);
        sb.Append(close);
    }

    public static void WriteString(StringBuilder sb, string s)
    {
        sb.Append('"');
        foreach (var c in s)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                case '\b': sb.Append("\\b"); break;
                case '\f': sb.Append("\\f"); break;
                default:
                    if (c < 0x20) sb.Append(CultureInfo.InvariantCulture, $"\\u{(int)c:x4}");
                    else sb.Append(c);
                    break;
            }
        }
        sb.Append('"');
    }
}
