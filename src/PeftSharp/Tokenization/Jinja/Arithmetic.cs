namespace PeftSharp.Tokenization.Jinja;

/// <summary>Python's + - * / // % ** on ints, floats, strings and lists.</summary>
internal static class Arithmetic
{
    public static object? Apply(string op, object? a, object? b, int line)
    {
        if (a is Undefined u || b is Undefined) throw Undefined(a as Undefined ?? (Undefined)b!, op, line);
        switch (op, a, b)
        {
            case ("+", string x, string y): return x + y;
            case ("+", List<object?> x, List<object?> y): return x.Concat(y).ToList();
            case ("*", string x, long n): return string.Concat(Enumerable.Repeat(x, (int)Math.Max(0, n)));
            case ("*", List<object?> x, long n): return Enumerable.Repeat(x, (int)Math.Max(0, n)).SelectMany(l => l).ToList();
        }
        if (!Values.IsNumber(a) || !Values.IsNumber(b))
            throw new TemplateException($"line {line}: unsupported operand types for {op}: {Values.TypeName(a)} and {Values.TypeName(b)}");
        if (a is not double && b is not double && op != "/")
        {
            long x = Convert.ToInt64(a is bool p ? (p ? 1 : 0) : a), y = Convert.ToInt64(b is bool q ? (q ? 1 : 0) : b);
            return op switch // arms typed object: a long/double mix would make every result a double
            {
                "+" => (object)(x + y),
                "-" => x - y,
                "*" => x * y,
                "//" => y == 0 ? throw DivisionByZero(line) : FloorDiv(x, y),
                "%" => y == 0 ? throw DivisionByZero(line) : x - y * FloorDiv(x, y),
                "**" => y >= 0 ? (long)Math.Pow(x, y) : (object)Math.Pow(x, y),
                _ => throw new TemplateException($"line {line}: unknown operator {op}"),
            };
        }
        double dx = Values.ToDouble(a), dy = Values.ToDouble(b);
        return op switch
        {
            "+" => dx + dy,
            "-" => dx - dy,
            "*" => dx * dy,
            "/" => dy == 0 ? throw DivisionByZero(line) : dx / dy,
            "//" => dy == 0 ? throw DivisionByZero(line) : Math.Floor(dx / dy),
            "%" => dy == 0 ? throw DivisionByZero(line) : dx - dy * Math.Floor(dx / dy),
            "**" => Math.Pow(dx, dy),
            _ => throw new TemplateException($"line {line}: unknown operator {op}"),
        };
    }

    static long FloorDiv(long x, long y) => x / y - ((x % y != 0 && (x < 0) != (y < 0)) ? 1 : 0);

    static TemplateException DivisionByZero(int line) => new($"line {line}: division by zero");

    public static TemplateException Undefined(Undefined u, string op, int line) =>
        new($"line {line}: '{u.Name}' is undefined (used with '{op}')");
}
