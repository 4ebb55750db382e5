using System.Text;

namespace PeftSharp.Tokenization.Jinja;

/// <summary>
/// Renders a parsed template. A for loop's body and a macro's body get their own scope (a <c>set</c> there does not
/// leak out, as in Jinja); <c>namespace()</c> objects carry values out. Text inside <c>{% generation %}</c> is
/// recorded as character spans of the output (transformers' assistant-token mask).
/// </summary>
internal sealed class Evaluator
{
    enum Flow { Normal, Break, Continue }

    sealed class Scope(Scope? parent)
    {
        readonly Scope? parent = parent;
        readonly Dictionary<string, object?> vars = new(StringComparer.Ordinal);

        public bool TryGet(string name, out object? value)
        {
            for (var s = this; s != null; s = s.parent)
                if (s.vars.TryGetValue(name, out value)) return true;
            value = null;
            return false;
        }

        public void Set(string name, object? value) => vars[name] = value;
    }

    readonly Scope globals;
    StringBuilder output = new();
    readonly StringBuilder root;
    readonly List<(int Start, int End)> generationSpans = [];

    public Evaluator(IReadOnlyDictionary<string, object?> context)
    {
        globals = new Scope(null);
        foreach (var (name, value) in Builtins.Globals) globals.Set(name, value);
        foreach (var (name, value) in context) globals.Set(name, value);
        root = output;
    }

    public (string Text, List<(int Start, int End)> GenerationSpans) Render(List<Node> template)
    {
        var flow = Execute(template, new Scope(globals));
        if (flow != Flow.Normal) throw new TemplateException("'{% break %}' or '{% continue %}' outside a for loop");
        return (root.ToString(), generationSpans);
    }

    Flow Execute(List<Node> nodes, Scope scope)
    {
        foreach (var node in nodes)
        {
            var flow = Execute(node, scope);
            if (flow != Flow.Normal) return flow;
        }
        return Flow.Normal;
    }

    Flow Execute(Node node, Scope scope)
    {
        switch (node)
        {
            case TextNode t:
                output.Append(t.Text);
                return Flow.Normal;
            case OutputNode o:
                output.Append(Values.Str(Eval(o.Value, scope)));
                return Flow.Normal;
            case IfNode i:
                return Execute(Values.Truthy(Eval(i.Test, scope)) ? i.Body : i.Else, scope);
            case ForNode f:
                return For(f, scope);
            case SetNode s:
                Set(s, scope);
                return Flow.Normal;
            case MacroNode m:
                scope.Set(m.Name, Macro(m, scope));
                return Flow.Normal;
            case GenerationNode g:
                int start = output.Length;
                var flow = Execute(g.Body, scope);
                if (ReferenceEquals(output, root)) generationSpans.Add((start, output.Length));
                return flow;
            case LoopControlNode c:
                return c.IsBreak ? Flow.Break : Flow.Continue;
            case FilterBlockNode fb:
                var text = Capture(fb.Body, scope);
                output.Append(Values.Str(Builtins.Filter(fb.Filter, text, [.. fb.Args.Select(a => Eval(a, scope))], [], fb.Line)));
                return Flow.Normal;
            default:
                throw new TemplateException($"line {node.Line}: cannot run {node.GetType().Name}");
        }
    }

    string Capture(List<Node> body, Scope scope)
    {
        var saved = output;
        output = new StringBuilder();
        try
        {
            Execute(body, scope);
            return output.ToString();
        }
        finally
        {
            output = saved;
        }
    }

    Flow For(ForNode f, Scope scope)
    {
        var iterable = Eval(f.Iterable, scope);
        var items = Builtins.Iterate(iterable, f.Line).ToList();
        if (f.Filter != null)
            items = items.Where(item => Values.Truthy(Eval(f.Filter, Bind(f, item, new Scope(scope))))).ToList();
        if (items.Count == 0) return Execute(f.Else, scope);
        for (int i = 0; i < items.Count; i++)
        {
            var body = Bind(f, items[i], new Scope(scope));
            body.Set("loop", Loop(items, i));
            var flow = Execute(f.Body, body);
            if (flow == Flow.Break) break;
        }
        return Flow.Normal;
    }

    static Scope Bind(ForNode f, object? item, Scope scope)
    {
        if (f.Targets.Count == 1)
        {
            scope.Set(f.Targets[0], item);
            return scope;
        }
        var parts = item as List<object?> ?? throw new TemplateException($"line {f.Line}: cannot unpack {Values.TypeName(item)} into {string.Join(", ", f.Targets)}");
        if (parts.Count != f.Targets.Count)
            throw new TemplateException($"line {f.Line}: cannot unpack {parts.Count} values into {f.Targets.Count} names");
        for (int i = 0; i < parts.Count; i++) scope.Set(f.Targets[i], parts[i]);
        return scope;
    }

    static Dictionary<string, object?> Loop(List<object?> items, int i) => new(StringComparer.Ordinal)
    {
        ["index"] = (long)i + 1,
        ["index0"] = (long)i,
        ["revindex"] = (long)(items.Count - i),
        ["revindex0"] = (long)(items.Count - i - 1),
        ["first"] = i == 0,
        ["last"] = i == items.Count - 1,
        ["length"] = (long)items.Count,
        ["previtem"] = i > 0 ? items[i - 1] : new Undefined("loop.previtem"),
        ["nextitem"] = i + 1 < items.Count ? items[i + 1] : new Undefined("loop.nextitem"),
        ["cycle"] = new Callable("loop.cycle", (args, _) => args.Count == 0 ? null : args[i % args.Count]),
    };

    void Set(SetNode s, Scope scope)
    {
        var value = s.Value != null ? Eval(s.Value, scope) : Capture(s.Body!, scope);
        if (s.Attribute != null)
        {
            if (!scope.TryGet(s.Targets[0], out var target) || target is not Namespace ns)
                throw new TemplateException($"line {s.Line}: '{{% set {s.Targets[0]}.{s.Attribute} %}}' needs '{s.Targets[0]}' to be a namespace()");
            ns.Attributes[s.Attribute] = value;
            return;
        }
        if (s.Targets.Count == 1)
        {
            scope.Set(s.Targets[0], value);
            return;
        }
        var parts = Builtins.Iterate(value, s.Line).ToList();
        if (parts.Count != s.Targets.Count)
            throw new TemplateException($"line {s.Line}: cannot unpack {parts.Count} values into {s.Targets.Count} names");
        for (int i = 0; i < parts.Count; i++) scope.Set(s.Targets[i], parts[i]);
    }

    /// <summary>Calls nest at most this deep, so a macro that calls itself forever is an error, not a stack overflow.</summary>
    const int MaxMacroDepth = 200;
    int macroDepth;

    Callable Macro(MacroNode m, Scope defining) => new(m.Name, (args, kwargs) =>
    {
        if (macroDepth >= MaxMacroDepth)
            throw new TemplateException($"line {m.Line}: macro '{m.Name}' nests deeper than {MaxMacroDepth} calls (endless recursion?)");
        if (args.Count > m.Parameters.Count)
            throw new TemplateException($"line {m.Line}: macro '{m.Name}' takes {m.Parameters.Count} arguments, got {args.Count}");
        var scope = new Scope(defining);
        for (int i = 0; i < m.Parameters.Count; i++)
        {
            var (name, fallback) = m.Parameters[i];
            object? value = i < args.Count ? args[i]
                : kwargs.TryGetValue(name, out var k) ? k
                : fallback != null ? Eval(fallback, defining) : new Undefined(name);
            scope.Set(name, value);
        }
        macroDepth++;
        try
        {
            return Capture(m.Body, scope);
        }
        finally
        {
            macroDepth--;
        }
    });

    object? Eval(Expr e, Scope scope)
    {
        switch (e)
        {
            case Literal l: return l.Value;
            case NameExpr n: return scope.TryGet(n.Name, out var v) ? v : new Undefined(n.Name);
            case ListExpr l:
                var items = l.Items.Select(i => Eval(i, scope));
                return l.IsTuple ? new PyTuple(items) : items.ToList();
            case DictExpr d:
                var dict = new Dictionary<string, object?>(StringComparer.Ordinal);
                foreach (var (key, value) in d.Items)
                    dict[Eval(key, scope) as string ?? throw new TemplateException($"line {d.Line}: dict keys must be strings")] = Eval(value, scope);
                return dict;
            case AttrExpr a: return Builtins.GetAttr(Eval(a.Target, scope), a.Name, a.Line);
            case IndexExpr i: return Builtins.GetItem(Eval(i.Target, scope), Eval(i.Index, scope), i.Line);
            case SliceExpr s:
                return Builtins.Slice(Eval(s.Target, scope), Opt(s.Start, scope), Opt(s.Stop, scope), Opt(s.Step, scope), s.Line);
            case CallExpr c:
                var callee = Eval(c.Callee, scope);
                if (callee is not Callable function)
                    throw new TemplateException($"line {c.Line}: {Describe(c.Callee)} is {Values.TypeName(callee)}, not a function");
                return function.Invoke(c.Args.Select(a => Eval(a, scope)).ToList(), Kwargs(c.Kwargs, scope));
            case FilterExpr f:
                return Builtins.Filter(f.Name, Eval(f.Value, scope), f.Args.Select(a => Eval(a, scope)).ToList(), Kwargs(f.Kwargs, scope), f.Line);
            case TestExpr t:
                var result = Builtins.Test(t.Name, Eval(t.Value, scope), t.Args.Select(a => Eval(a, scope)).ToList(), t.Line);
                return result != t.Negated;
            case UnaryExpr u:
                var operand = Eval(u.Operand, scope);
                return u.Op switch
                {
                    "not" => !Values.Truthy(operand),
                    "-" => operand switch
                    {
                        long x => (object)(-x),
                        double x => -x,
                        _ => throw new TemplateException($"line {u.Line}: cannot negate {Values.TypeName(operand)}"),
                    },
                    _ => operand,
                };
            case BinaryExpr b: return Binary(b, scope);
            case CondExpr c:
                return Values.Truthy(Eval(c.Test, scope)) ? Eval(c.Then, scope)
                    : c.Else != null ? Eval(c.Else, scope) : new Undefined("conditional expression");
            default:
                throw new TemplateException($"line {e.Line}: cannot evaluate {e.GetType().Name}");
        }
    }

    object? Opt(Expr? e, Scope scope) => e is null ? null : Eval(e, scope);

    Dictionary<string, object?> Kwargs(List<(string Name, Expr Value)> kwargs, Scope scope)
    {
        var result = new Dictionary<string, object?>(StringComparer.Ordinal);
        foreach (var (name, value) in kwargs) result[name] = Eval(value, scope);
        return result;
    }

    static string Describe(Expr e) => e switch
    {
        NameExpr n => $"'{n.Name}'",
        AttrExpr a => $"'{a.Name}'",
        _ => "the callee",
    };

    object? Binary(BinaryExpr b, Scope scope)
    {
        var left = Eval(b.Left, scope);
        switch (b.Op)
        {
            case "and": return Values.Truthy(left) ? Eval(b.Right, scope) : left;
            case "or": return Values.Truthy(left) ? left : Eval(b.Right, scope);
        }
        var right = Eval(b.Right, scope);
        return b.Op switch
        {
            "==" => Values.Equals(left, right),
            "!=" => !Values.Equals(left, right),
            "<" => Values.Compare(left, right, b.Line) < 0,
            "<=" => Values.Compare(left, right, b.Line) <= 0,
            ">" => Values.Compare(left, right, b.Line) > 0,
            ">=" => Values.Compare(left, right, b.Line) >= 0,
            "in" => Builtins.Contains(right, left, b.Line),
            "not in" => !Builtins.Contains(right, left, b.Line),
            "~" => Values.Str(left) + Values.Str(right),
            _ => Arithmetic.Apply(b.Op, left, right, b.Line),
        };
    }
}
