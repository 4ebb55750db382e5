using System.Globalization;
using System.Text;

namespace PeftSharp.Tokenization.Jinja;

/// <summary>Jinja's built-in filters that chat templates use, and transformers' own <c>tojson</c>.</summary>
internal static partial class Builtins
{
    /// <summary>The filters <see cref="Filter"/> knows, so that the parser can name an unknown one up front.</summary>
    public static readonly HashSet<string> FilterNames =
    [
        "trim", "tojson", "length", "count", "upper", "lower", "title", "capitalize", "replace", "join", "default", "d",
        "items", "first", "last", "string", "list", "int", "float", "abs", "round", "reverse", "sort", "unique", "map",
        "select", "reject", "selectattr", "rejectattr", "dictsort", "indent", "safe", "escape", "e", "forceescape",
        "min", "max", "sum", "format",
    ];

    public static object? Filter(string name, object? v, List<object?> args, Dictionary<string, object?> kwargs, int line)
    {
        object? Arg(int i, string key, object? fallback = null) =>
            i < args.Count ? args[i] : kwargs.TryGetValue(key, out var k) ? k : fallback;
        switch (name)
        {
            case "trim": return Arg(0, "chars") is string chars ? Values.Str(v).Trim(chars.ToCharArray()) : Values.Str(v).Trim();
            case "tojson":
                return PyJson.Dumps(v, Arg(0, "indent") is long indent ? (int)indent : null,
                    Values.Truthy(kwargs.GetValueOrDefault("sort_keys")), line);
            case "length" or "count":
                return v switch
                {
                    string s => (long)s.Length,
                    List<object?> l => (long)l.Count,
                    Dictionary<string, object?> d => (long)d.Count,
                    Undefined => 0L,
                    _ => throw new TemplateException($"line {line}: {Values.TypeName(v)} has no length"),
                };
            case "upper": return Values.Str(v).ToUpperInvariant();
            case "lower": return Values.Str(v).ToLowerInvariant();
            case "title": return Title(Values.Str(v));
            case "capitalize": return Capitalize(Values.Str(v));
            case "replace":
                return Replace(Values.Str(v), Values.Str(Arg(0, "old")), Values.Str(Arg(1, "new")), Arg(2, "count") is long n ? n : -1);
            case "join":
                var sep = Values.Str(Arg(0, "d", ""));
                var items = Iterate(v, line);
                if (Arg(1, "attribute") is string attr) items = items.Select(x => GetAttr(x, attr, line));
                return string.Join(sep, items.Select(Values.Str));
            case "default" or "d":
                bool boolean = Values.Truthy(Arg(1, "boolean", false));
                return v is Undefined || (boolean && !Values.Truthy(v)) ? Arg(0, "default_value", "") : v;
            case "items":
                return v switch
                {
                    Dictionary<string, object?> d => d.Select(kv => (object?)new PyTuple([kv.Key, kv.Value])).ToList(),
                    Undefined => new List<object?>(),
                    _ => throw new TemplateException($"line {line}: the 'items' filter needs a dict, not {Values.TypeName(v)}"),
                };
            case "first": return Iterate(v, line).Select(x => x).DefaultIfEmpty(new Undefined("first")).First();
            case "last": return Iterate(v, line).Select(x => x).DefaultIfEmpty(new Undefined("last")).Last();
            case "string": return Values.Str(v);
            case "list": return Iterate(v, line).ToList();
            case "int": return ToInt(v, Arg(0, "default", 0L));
            case "float": return ToFloat(v, Arg(0, "default", 0.0));
            case "abs": return v switch { long l => (object)Math.Abs(l), double d => Math.Abs(d), _ => throw new TemplateException($"line {line}: abs needs a number") };
            case "round": return Math.Round(Values.ToDouble(v), (int)(Arg(0, "precision") as long? ?? 0), MidpointRounding.AwayFromZero);
            case "reverse": return v is string rs ? new string(rs.Reverse().ToArray()) : Iterate(v, line).Reverse().ToList();
            case "sort":
                var keyAttr = Arg(2, "attribute") as string;
                var sorted = Iterate(v, line).ToList();
                sorted.Sort((a, b) => Values.Compare(keyAttr is null ? a : GetAttr(a, keyAttr, line), keyAttr is null ? b : GetAttr(b, keyAttr, line), line));
                if (Values.Truthy(Arg(0, "reverse", false))) sorted.Reverse();
                return sorted;
            case "unique":
                var seen = new List<object?>();
                foreach (var x in Iterate(v, line)) if (!seen.Any(y => Values.Equals(x, y))) seen.Add(x);
                return seen;
            case "map":
                if (kwargs.TryGetValue("attribute", out var mapAttr))
                    return Iterate(v, line).Select(x => GetAttr(x, Values.Str(mapAttr), line) is Undefined && kwargs.TryGetValue("default", out var dflt) ? dflt : GetAttr(x, Values.Str(mapAttr), line)).ToList();
                var filter = Values.Str(Arg(0, "filter"));
                return Iterate(v, line).Select(x => Filter(filter, x, args.Skip(1).ToList(), [], line)).ToList();
            case "select" or "reject":
                return Iterate(v, line).Where(x => Truthy(args.Count == 0 ? Values.Truthy(x) : Test(Values.Str(args[0]), x, args.Skip(1).ToList(), line)) == (name == "select")).ToList();
            case "selectattr" or "rejectattr":
                var attribute = Values.Str(Arg(0, "attribute"));
                return Iterate(v, line).Where(x =>
                {
                    var a = GetAttr(x, attribute, line);
                    bool ok = args.Count < 2 ? Values.Truthy(a) : Test(Values.Str(args[1]), a, args.Skip(2).ToList(), line);
                    return ok == (name == "selectattr");
                }).ToList();
            case "dictsort":
                return (v as Dictionary<string, object?> ?? throw new TemplateException($"line {line}: dictsort needs a dict"))
                    .OrderBy(kv => kv.Key, StringComparer.OrdinalIgnoreCase).Select(kv => (object?)new PyTuple([kv.Key, kv.Value])).ToList();
            case "indent":
                return Indent(Values.Str(v), Arg(0, "width", 4L), Values.Truthy(Arg(1, "first", false)), Values.Truthy(Arg(2, "blank", false)));
            case "safe": return v;
            case "escape" or "e" or "forceescape": return Escape(Values.Str(v));
            case "min" or "max":
                var all = Iterate(v, line).ToList();
                if (all.Count == 0) return new Undefined(name);
                return all.Aggregate((a, b) => (Values.Compare(a, b, line) <= 0) == (name == "min") ? a : b);
            case "sum": return Iterate(v, line).Aggregate(Arg(1, "start", 0L), (a, b) => Arithmetic.Apply("+", a, b, line));
            case "format": return Format(Values.Str(v), args, line);
            default:
                throw new TemplateException($"line {line}: the filter '{name}' is not supported by PeftSharp's Jinja interpreter");
        }
    }

    static bool Truthy(bool b) => b;

    static object? ToInt(object? v, object? fallback) => v switch
    {
        long l => l,
        double d => (long)Math.Truncate(d),
        bool b => b ? 1L : 0L,
        string s when long.TryParse(s.Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out var l) => l,
        string s when double.TryParse(s.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out var d) => (long)Math.Truncate(d),
        _ => fallback,
    };

    static object? ToFloat(object? v, object? fallback) => v switch
    {
        long l => (double)l,
        double d => d,
        string s when double.TryParse(s.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out var d) => d,
        _ => fallback,
    };

    static string Indent(string s, object? width, bool first, bool blank)
    {
        var pad = width is string w ? w : new string(' ', (int)(width as long? ?? 4));
        var lines = s.Split('\n');
        var sb = new StringBuilder();
        for (int i = 0; i < lines.Length; i++)
        {
            if (i > 0) sb.Append('\n');
            bool indent = (i > 0 || first) && (blank || lines[i].Trim().Length > 0);
            sb.Append(indent ? pad : "").Append(lines[i]);
        }
        return sb.ToString();
    }

    static string Escape(string s) => s.Replace("&", "&amp;", StringComparison.Ordinal).Replace("<", "&lt;", StringComparison.Ordinal)
        .Replace(">", "&gt;", StringComparison.Ordinal).Replace("\"", "&#34;", StringComparison.Ordinal).Replace("'", "&#39;", StringComparison.Ordinal);

    /// <summary>The <c>format</c> filter: Python's <c>"%s" % args</c> for %s and %d.</summary>
    static string Format(string pattern, List<object?> args, int line)
    {
        var sb = new StringBuilder();
        int next = 0;
        for (int i = 0; i < pattern.Length; i++)
        {
            if (pattern[i] != '%' || i + 1 == pattern.Length) { sb.Append(pattern[i]); continue; }
            char c = pattern[++i];
            if (c == '%') { sb.Append('%'); continue; }
            if (next >= args.Count) throw new TemplateException($"line {line}: format: not enough arguments");
            sb.Append(c switch
            {
                's' => Values.Str(args[next++]),
                'd' => Convert.ToString(ToInt(args[next++], 0L), CultureInfo.InvariantCulture),
                _ => throw new TemplateException($"line {line}: format: '%{c}' is not supported"),
            });
        }
        return sb.ToString();
    }
}
