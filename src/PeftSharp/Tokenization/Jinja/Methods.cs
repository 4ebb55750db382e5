namespace PeftSharp.Tokenization.Jinja;

/// <summary>The Python methods of str and dict that chat templates call (<c>content.split('&lt;/think&gt;')</c>, <c>tool.items()</c>).</summary>
internal static partial class Builtins
{
    static Callable? Method(object? target, string name, int line) => target switch
    {
        string s => StringMethod(s, name, line),
        Dictionary<string, object?> d => name switch
        {
            "items" => new Callable(name, (_, _) => d.Select(kv => (object?)new PyTuple([kv.Key, kv.Value])).ToList()),
            "keys" => new Callable(name, (_, _) => d.Keys.Select(k => (object?)k).ToList()),
            "values" => new Callable(name, (_, _) => d.Values.ToList()),
            "get" => new Callable(name, (a, _) => a.Count > 0 && a[0] is string k && d.TryGetValue(k, out var v) ? v : a.Count > 1 ? a[1] : null),
            _ => null,
        },
        _ => null,
    };

    static Callable? StringMethod(string s, string name, int line)
    {
        string Arg(List<object?> a, int i, string what) =>
            i < a.Count && a[i] is string x ? x : throw new TemplateException($"line {line}: str.{name}() needs {what} as a string");
        string? Chars(List<object?> a) => a.Count > 0 && a[0] is string c ? c : null;
        return name switch
        {
            "startswith" => new Callable(name, (a, _) => Affixes(a, line, name).Any(p => s.StartsWith(p, StringComparison.Ordinal))),
            "endswith" => new Callable(name, (a, _) => Affixes(a, line, name).Any(p => s.EndsWith(p, StringComparison.Ordinal))),
            "strip" => new Callable(name, (a, _) => Chars(a) is { } c ? s.Trim(c.ToCharArray()) : s.Trim()),
            "lstrip" => new Callable(name, (a, _) => Chars(a) is { } c ? s.TrimStart(c.ToCharArray()) : s.TrimStart()),
            "rstrip" => new Callable(name, (a, _) => Chars(a) is { } c ? s.TrimEnd(c.ToCharArray()) : s.TrimEnd()),
            "split" => new Callable(name, (a, kw) => Split(s, a.Count > 0 ? a[0] : kw.GetValueOrDefault("sep"),
                a.Count > 1 ? a[1] : kw.GetValueOrDefault("maxsplit"), line)),
            "upper" => new Callable(name, (_, _) => s.ToUpperInvariant()),
            "lower" => new Callable(name, (_, _) => s.ToLowerInvariant()),
            "title" => new Callable(name, (_, _) => Title(s)),
            "capitalize" => new Callable(name, (_, _) => Capitalize(s)),
            "replace" => new Callable(name, (a, _) => Replace(s, Arg(a, 0, "the old text"), Arg(a, 1, "the new text"), a.Count > 2 && a[2] is long n ? n : -1)),
            "find" => new Callable(name, (a, _) => (long)s.IndexOf(Arg(a, 0, "the text to find"), StringComparison.Ordinal)),
            "count" => new Callable(name, (a, _) => (long)Count(s, Arg(a, 0, "the text to count"))),
            "join" => new Callable(name, (a, _) => string.Join(s, Iterate(a.Count > 0 ? a[0] : null, line).Select(Values.Str))),
            "isdigit" => new Callable(name, (_, _) => s.Length > 0 && s.All(char.IsDigit)),
            "isspace" => new Callable(name, (_, _) => s.Length > 0 && s.All(char.IsWhiteSpace)),
            "removeprefix" => new Callable(name, (a, _) => Arg(a, 0, "the prefix") is var p && s.StartsWith(p, StringComparison.Ordinal) ? s[p.Length..] : s),
            "removesuffix" => new Callable(name, (a, _) => Arg(a, 0, "the suffix") is var p && p.Length > 0 && s.EndsWith(p, StringComparison.Ordinal) ? s[..^p.Length] : s),
            "splitlines" => new Callable(name, (_, _) => s.Split('\n').Select(x => (object?)x.TrimEnd('\r')).ToList() is var l && s.EndsWith('\n') ? l[..^1] : l),
            _ => null,
        };
    }

    static IEnumerable<string> Affixes(List<object?> a, int line, string name) => a.Count > 0 ? a[0] switch
    {
        string p => [p],
        List<object?> many => many.Select(x => x as string ?? throw new TemplateException($"line {line}: str.{name}() needs strings")),
        _ => throw new TemplateException($"line {line}: str.{name}() needs a string or a tuple of strings"),
    } : throw new TemplateException($"line {line}: str.{name}() needs an argument");

    /// <summary>Python's <c>str.split(sep, maxsplit)</c>: no separator splits on runs of whitespace and drops empty parts.</summary>
    static List<object?> Split(string s, object? sep, object? maxsplit, int line)
    {
        int max = maxsplit is long m && m >= 0 ? (int)m : int.MaxValue;
        if (sep is null or Undefined)
        {
            var parts = new List<object?>();
            int i = 0;
            while (true)
            {
                while (i < s.Length && char.IsWhiteSpace(s[i])) i++;
                if (i == s.Length) return parts;
                if (parts.Count == max) { parts.Add(s[i..].TrimEnd()); return parts; }
                int start = i;
                while (i < s.Length && !char.IsWhiteSpace(s[i])) i++;
                parts.Add(s[start..i]);
            }
        }
        var separator = sep as string ?? throw new TemplateException($"line {line}: str.split() needs a string separator");
        if (separator.Length == 0) throw new TemplateException($"line {line}: str.split() separator is empty");
        var result = max == int.MaxValue ? s.Split(separator) : s.Split(separator, max + 1);
        return result.Select(x => (object?)x).ToList();
    }

    static string Replace(string s, string old, string @new, long count)
    {
        if (count < 0) return old.Length == 0 ? string.Concat(s.Select(c => @new + c)) + @new : s.Replace(old, @new, StringComparison.Ordinal);
        var sb = new System.Text.StringBuilder();
        int at = 0;
        for (long n = 0; n < count; n++)
        {
            int i = s.IndexOf(old, at, StringComparison.Ordinal);
            if (i < 0 || old.Length == 0) break;
            sb.Append(s, at, i - at).Append(@new);
            at = i + old.Length;
        }
        return sb.Append(s, at, s.Length - at).ToString();
    }

    static int Count(string s, string sub)
    {
        if (sub.Length == 0) return s.Length + 1;
        int n = 0;
        for (int i = s.IndexOf(sub, StringComparison.Ordinal); i >= 0; i = s.IndexOf(sub, i + sub.Length, StringComparison.Ordinal)) n++;
        return n;
    }

    static string Capitalize(string s) => s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..].ToLowerInvariant();

    static string Title(string s)
    {
        var chars = s.ToCharArray();
        bool previousIsLetter = false;
        for (int i = 0; i < chars.Length; i++)
        {
            chars[i] = previousIsLetter ? char.ToLowerInvariant(chars[i]) : char.ToUpperInvariant(chars[i]);
            previousIsLetter = char.IsLetter(chars[i]);
        }
        return new string(chars);
    }
}
