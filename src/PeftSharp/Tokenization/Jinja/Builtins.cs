using System.Globalization;
using System.Text;

namespace PeftSharp.Tokenization.Jinja;

/// <summary>Attribute and item access, iteration, <c>in</c>, tests and global functions, with Jinja's Python semantics.</summary>
internal static partial class Builtins
{
    public static readonly IReadOnlyDictionary<string, object?> Globals = new Dictionary<string, object?>(StringComparer.Ordinal)
    {
        ["range"] = new Callable("range", (a, _) => Range(a)),
        ["namespace"] = new Callable("namespace", (a, kw) =>
        {
            var ns = new Namespace();
            if (a.Count > 0 && a[0] is Dictionary<string, object?> init)
                foreach (var (k, v) in init) ns.Attributes[k] = v;
            foreach (var (k, v) in kw) ns.Attributes[k] = v;
            return ns;
        }),
        ["dict"] = new Callable("dict", (a, kw) =>
        {
            var d = a.Count > 0 && a[0] is Dictionary<string, object?> init ? new Dictionary<string, object?>(init, StringComparer.Ordinal) : new(StringComparer.Ordinal);
            foreach (var (k, v) in kw) d[k] = v;
            return d;
        }),
        ["raise_exception"] = new Callable("raise_exception", (a, _) =>
            throw new TemplateException(a.Count > 0 ? Values.Str(a[0]) : "raise_exception() called")),
        ["strftime_now"] = StrftimeNow(() => DateTime.Now),
    };

    /// <summary>transformers' <c>strftime_now(format)</c> over the given clock.</summary>
    public static Callable StrftimeNow(Func<DateTime> now) => new("strftime_now", (a, _) => Strftime(now(), a.Count > 0 ? Values.Str(a[0]) : ""));

    static List<object?> Range(List<object?> a)
    {
        long[] n = a.Select(x => x is long l ? l : throw new TemplateException("range() needs integers")).ToArray();
        var (start, stop, step) = n.Length switch { 1 => (0L, n[0], 1L), 2 => (n[0], n[1], 1L), _ => (n[0], n[1], n[2]) };
        if (step == 0) throw new TemplateException("range() step must not be zero");
        if ((stop - start) / step > 1_000_000) throw new TemplateException($"range({start}, {stop}, {step}) is longer than a chat template needs (1,000,000)");
        var list = new List<object?>();
        for (long i = start; step > 0 ? i < stop : i > stop; i += step) list.Add(i);
        return list;
    }

    /// <summary>Python's strftime for the directives chat templates use.</summary>
    public static string Strftime(DateTime t, string format)
    {
        var c = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        for (int i = 0; i < format.Length; i++)
        {
            if (format[i] != '%' || i + 1 == format.Length) { sb.Append(format[i]); continue; }
            sb.Append(format[++i] switch
            {
                'd' => t.ToString("dd", c),
                'm' => t.ToString("MM", c),
                'Y' => t.ToString("yyyy", c),
                'y' => t.ToString("yy", c),
                'b' => t.ToString("MMM", c),
                'B' => t.ToString("MMMM", c),
                'a' => t.ToString("ddd", c),
                'A' => t.ToString("dddd", c),
                'H' => t.ToString("HH", c),
                'I' => t.ToString("hh", c),
                'M' => t.ToString("mm", c),
                'S' => t.ToString("ss", c),
                'p' => t.Hour < 12 ? "AM" : "PM",
                'j' => t.DayOfYear.ToString("000", c),
                '%' => "%",
                var other => throw new TemplateException($"strftime_now: the directive '%{other}' is not supported"),
            });
        }
        return sb.ToString();
    }

    /// <summary><c>obj.name</c>: a method of str/dict/list if there is one, else the item (Jinja tries the attribute first).</summary>
    public static object? GetAttr(object? target, string name, int line)
    {
        if (target is Undefined u) throw new TemplateException($"line {line}: '{u.Name}' is undefined (reading '.{name}')");
        if (Method(target, name, line) is { } method) return method;
        return target switch
        {
            Dictionary<string, object?> d => d.TryGetValue(name, out var v) ? v : new Undefined(name),
            Namespace ns => ns.Attributes.TryGetValue(name, out var v) ? v : new Undefined(name),
            _ => new Undefined(name),
        };
    }

    /// <summary><c>obj[key]</c>: the item if there is one, else the attribute (Jinja tries the item first).</summary>
    public static object? GetItem(object? target, object? key, int line)
    {
        switch (target, key)
        {
            case (Undefined u, _):
                throw new TemplateException($"line {line}: '{u.Name}' is undefined (reading [{Values.Repr(key)}])");
            case (Dictionary<string, object?> d, string k):
                return d.TryGetValue(k, out var v) ? v : (object?)Method(target, k, line) ?? new Undefined(k);
            case (Namespace ns, string k):
                return ns.Attributes.TryGetValue(k, out var nv) ? nv : new Undefined(k);
            case (List<object?> list, long or bool):
                int i = Index(key, list.Count);
                return i >= 0 && i < list.Count ? list[i] : new Undefined($"[{Values.Repr(key)}]");
            case (string s, long or bool):
                int j = Index(key, s.Length);
                return j >= 0 && j < s.Length ? s[j].ToString() : new Undefined($"[{Values.Repr(key)}]");
            case (_, string name):
                return GetAttr(target, name, line);
            default:
                return new Undefined($"[{Values.Repr(key)}]");
        }
    }

    static int Index(object? key, int count)
    {
        long i = key is bool b ? (b ? 1 : 0) : (long)key!;
        return (int)(i < 0 ? i + count : i);
    }

    /// <summary>Python slicing <c>x[start:stop:step]</c> of a list or string.</summary>
    public static object? Slice(object? target, object? start, object? stop, object? step, int line)
    {
        int count = target switch
        {
            List<object?> l => l.Count,
            string s => s.Length,
            _ => throw new TemplateException($"line {line}: cannot slice {Values.TypeName(target)}"),
        };
        long st = step is long x ? x : 1;
        if (st == 0) throw new TemplateException($"line {line}: slice step cannot be zero");
        long Bound(object? v, long dflt, long lo, long hi)
        {
            if (v is null or Undefined) return dflt;
            long b = v is long l ? l : throw new TemplateException($"line {line}: slice indices must be integers");
            if (b < 0) b += count;
            return Math.Clamp(b, lo, hi);
        }
        long from = st > 0 ? Bound(start, 0, 0, count) : Bound(start, count - 1, -1, count - 1);
        long to = st > 0 ? Bound(stop, count, 0, count) : Bound(stop, -1, -1, count - 1);
        var indices = new List<int>();
        for (long i = from; st > 0 ? i < to : i > to; i += st) indices.Add((int)i);
        return target is string str
            ? new string(indices.Select(i => str[i]).ToArray())
            : indices.Select(i => ((List<object?>)target!)[i]).ToList();
    }

    /// <summary>What <c>for x in v</c> walks: list items, dict keys, string characters; nothing for an undefined value.</summary>
    public static IEnumerable<object?> Iterate(object? v, int line) => v switch
    {
        List<object?> l => l,
        Dictionary<string, object?> d => d.Keys.Cast<object?>(),
        string s => s.Select(c => (object?)c.ToString()),
        Undefined => [],
        _ => throw new TemplateException($"line {line}: cannot iterate over {Values.TypeName(v)}"),
    };

    /// <summary>Python's <c>item in container</c>.</summary>
    public static bool Contains(object? container, object? item, int line) => container switch
    {
        string s => item is string sub ? s.Contains(sub, StringComparison.Ordinal)
            : throw new TemplateException($"line {line}: 'in <string>' needs a string on the left, not {Values.TypeName(item)}"),
        List<object?> l => l.Any(x => Values.Equals(x, item)),
        Dictionary<string, object?> d => item is string k && d.ContainsKey(k),
        Namespace ns => item is string k && ns.Attributes.ContainsKey(k),
        Undefined u => throw new TemplateException($"line {line}: '{u.Name}' is undefined (used with 'in')"),
        _ => throw new TemplateException($"line {line}: {Values.TypeName(container)} is not a container (used with 'in')"),
    };

    /// <summary>The tests <see cref="Test"/> knows, so that the parser can name an unknown one up front.</summary>
    public static readonly HashSet<string> TestNames =
    [
        "defined", "undefined", "none", "string", "number", "integer", "float", "boolean", "true", "false", "mapping",
        "iterable", "sequence", "callable", "odd", "even", "divisibleby", "eq", "equalto", "==", "ne", "!=", "lt",
        "lessthan", "<", "le", "<=", "gt", "greaterthan", ">", "ge", ">=", "in", "sameas", "lower", "upper",
    ];

    /// <summary><c>value is name(args)</c>.</summary>
    public static bool Test(string name, object? v, List<object?> args, int line)
    {
        object? Arg() => args.Count > 0 ? args[0] : throw new TemplateException($"line {line}: the test '{name}' needs an argument");
        return name switch
        {
            "defined" => v is not Undefined,
            "undefined" => v is Undefined,
            "none" => v is null,
            "string" => v is string,
            "number" => v is long or double,
            "integer" => v is long,
            "float" => v is double,
            "boolean" => v is bool,
            "true" => v is true,
            "false" => v is false,
            "mapping" => v is Dictionary<string, object?> or Namespace,
            "iterable" => v is List<object?> or Dictionary<string, object?> or string,
            "sequence" => v is List<object?> or Dictionary<string, object?> or string,
            "callable" => v is Callable,
            "odd" => v is long l && Math.Abs(l % 2) == 1,
            "even" => v is long e && e % 2 == 0,
            "divisibleby" => v is long n && Arg() is long m && m != 0 && n % m == 0,
            "eq" or "equalto" or "==" => Values.Equals(v, Arg()),
            "ne" or "!=" => !Values.Equals(v, Arg()),
            "lt" or "lessthan" or "<" => Values.Compare(v, Arg(), line) < 0,
            "le" or "<=" => Values.Compare(v, Arg(), line) <= 0,
            "gt" or "greaterthan" or ">" => Values.Compare(v, Arg(), line) > 0,
            "ge" or ">=" => Values.Compare(v, Arg(), line) >= 0,
            "in" => Contains(Arg(), v, line),
            "sameas" => ReferenceEquals(v, Arg()) || (v is null && Arg() is null) || (v is bool a && Arg() is bool b && a == b),
            "lower" => v is string s && s == s.ToLowerInvariant(),
            "upper" => v is string u && u == u.ToUpperInvariant(),
            _ => throw new TemplateException($"line {line}: the test 'is {name}' is not supported by PeftSharp's Jinja interpreter"),
        };
    }
}
