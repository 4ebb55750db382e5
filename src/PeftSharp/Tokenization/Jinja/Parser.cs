using System.Globalization;

namespace PeftSharp.Tokenization.Jinja;

/// <summary>
/// Recursive-descent parser for the Jinja subset chat templates use. Expression precedence is Jinja's:
/// conditional, or, and, not, comparisons/in, + -, ~, * / // %, **, unary minus, then primaries with
/// attribute/index/call postfixes and filters/tests.
/// </summary>
internal sealed class Parser
{
    readonly List<Token> tokens;
    int pos;

    Parser(List<Token> tokens) => this.tokens = tokens;

    public static List<Node> Parse(string source)
    {
        var parser = new Parser(Lexer.Tokenize(source));
        var body = parser.Statements(out var end);
        if (end != null) throw new TemplateException($"line {parser.Current.Line}: '{{% {end} %}}' without a matching opening tag");
        return body;
    }

    Token Current => tokens[pos];

    Token Next() => tokens[pos++];

    bool IsOp(string op) => Current.Kind == TokenKind.Operator && Current.Value == op;

    bool IsName(string name) => Current.Kind == TokenKind.Name && Current.Value == name;

    bool AcceptOp(string op)
    {
        if (!IsOp(op)) return false;
        pos++;
        return true;
    }

    bool AcceptName(string name)
    {
        if (!IsName(name)) return false;
        pos++;
        return true;
    }

    void ExpectOp(string op)
    {
        if (!AcceptOp(op)) throw Error($"expected '{op}'");
    }

    void Expect(TokenKind kind, string what)
    {
        if (Current.Kind != kind) throw Error($"expected {what}");
        pos++;
    }

    string ExpectName()
    {
        if (Current.Kind != TokenKind.Name) throw Error("expected a name");
        return Next().Value;
    }

    TemplateException Error(string message)
    {
        var found = Current.Kind switch
        {
            TokenKind.End => "the end of the template",
            TokenKind.BlockEnd => "'%}'",
            TokenKind.VarEnd => "'}}'",
            TokenKind.String => $"the string '{Current.Value}'",
            _ => $"'{Current.Value}'",
        };
        return new TemplateException($"line {Current.Line}: {message}, found {found}");
    }

    /// <summary>
    /// Statements until the end of the template or a block tag this level does not own (endfor, else, ...),
    /// whose name is returned in <paramref name="end"/> with the parser positioned after the name.
    /// </summary>
    List<Node> Statements(out string? end, params string[] ends)
    {
        var body = new List<Node>();
        while (true)
        {
            var t = Current;
            switch (t.Kind)
            {
                case TokenKind.End:
                    if (ends.Length > 0) throw new TemplateException($"line {t.Line}: the template ends before '{{% {ends[^1]} %}}'");
                    end = null;
                    return body;
                case TokenKind.Text:
                    pos++;
                    body.Add(new TextNode(t.Value, t.Line));
                    break;
                case TokenKind.VarStart:
                    pos++;
                    body.Add(new OutputNode(Expression(), t.Line));
                    Expect(TokenKind.VarEnd, "'}}'");
                    break;
                case TokenKind.BlockStart:
                    pos++;
                    var name = Current.Kind == TokenKind.Name ? Current.Value : throw Error("expected a statement name");
                    if (ends.Contains(name))
                    {
                        pos++;
                        end = name;
                        return body;
                    }
                    pos++;
                    body.Add(Statement(name, t.Line));
                    break;
                default:
                    throw Error("unexpected token");
            }
        }
    }

    Node Statement(string name, int line)
    {
        switch (name)
        {
            case "if": return If(line);
            case "for": return For(line);
            case "set": return Set(line);
            case "macro": return Macro(line);
            case "generation":
                Expect(TokenKind.BlockEnd, "'%}'");
                var body = Statements(out _, "endgeneration");
                Expect(TokenKind.BlockEnd, "'%}'");
                return new GenerationNode(body, line);
            case "break" or "continue":
                Expect(TokenKind.BlockEnd, "'%}'");
                return new LoopControlNode(name == "break", line);
            case "filter": return FilterBlock(line);
            case "else" or "elif" or "endif" or "endfor" or "endset" or "endmacro" or "endgeneration" or "endfilter":
                throw new TemplateException($"line {line}: '{{% {name} %}}' without a matching opening tag");
            default:
                throw new TemplateException($"line {line}: the statement '{{% {name} %}}' is not supported by PeftSharp's Jinja interpreter");
        }
    }

    IfNode If(int line)
    {
        var test = Expression();
        Expect(TokenKind.BlockEnd, "'%}'");
        var body = Statements(out var end, "elif", "else", "endif");
        var otherwise = new List<Node>();
        if (end == "elif") otherwise.Add(If(Current.Line));
        else if (end == "else")
        {
            Expect(TokenKind.BlockEnd, "'%}'");
            otherwise = Statements(out _, "endif");
            Expect(TokenKind.BlockEnd, "'%}'");
        }
        else Expect(TokenKind.BlockEnd, "'%}'");
        return new IfNode(test, body, otherwise, line);
    }

    ForNode For(int line)
    {
        var targets = new List<string> { ExpectName() };
        while (AcceptOp(",")) targets.Add(ExpectName());
        if (!AcceptName("in")) throw Error("expected 'in' in a for loop");
        var iterable = Ternary(allowCondition: false);
        Expr? filter = AcceptName("if") ? Or() : null;
        if (AcceptName("recursive")) throw new TemplateException($"line {line}: recursive for loops are not supported");
        Expect(TokenKind.BlockEnd, "'%}'");
        var body = Statements(out var end, "else", "endfor");
        var otherwise = new List<Node>();
        Expect(TokenKind.BlockEnd, "'%}'");
        if (end == "else")
        {
            otherwise = Statements(out _, "endfor");
            Expect(TokenKind.BlockEnd, "'%}'");
        }
        return new ForNode(targets, iterable, filter, body, otherwise, line);
    }

    SetNode Set(int line)
    {
        var targets = new List<string> { ExpectName() };
        string? attribute = null;
        if (AcceptOp(".")) attribute = ExpectName();
        while (attribute == null && AcceptOp(",")) targets.Add(ExpectName());
        if (AcceptOp("="))
        {
            var value = Expression();
            Expect(TokenKind.BlockEnd, "'%}'");
            return new SetNode(targets, attribute, value, null, line);
        }
        Expect(TokenKind.BlockEnd, "'=' or '%}'");
        var body = Statements(out _, "endset");
        Expect(TokenKind.BlockEnd, "'%}'");
        return new SetNode(targets, attribute, null, body, line);
    }

    MacroNode Macro(int line)
    {
        var name = ExpectName();
        ExpectOp("(");
        var parameters = new List<(string, Expr?)>();
        while (!AcceptOp(")"))
        {
            if (parameters.Count > 0) ExpectOp(",");
            if (AcceptOp(")")) break;
            var p = ExpectName();
            parameters.Add((p, AcceptOp("=") ? Expression() : null));
        }
        Expect(TokenKind.BlockEnd, "'%}'");
        var body = Statements(out _, "endmacro");
        if (Current.Kind == TokenKind.Name) pos++; // {% endmacro name %}
        Expect(TokenKind.BlockEnd, "'%}'");
        return new MacroNode(name, parameters, body, line);
    }

    FilterBlockNode FilterBlock(int line)
    {
        var name = ExpectName();
        if (!Builtins.FilterNames.Contains(name))
            throw new TemplateException($"line {line}: the filter '{name}' is not supported by PeftSharp's Jinja interpreter");
        var args = new List<Expr>();
        if (AcceptOp("("))
            while (!AcceptOp(")"))
            {
                if (args.Count > 0) ExpectOp(",");
                args.Add(Expression());
            }
        Expect(TokenKind.BlockEnd, "'%}'");
        var body = Statements(out _, "endfilter");
        Expect(TokenKind.BlockEnd, "'%}'");
        return new FilterBlockNode(name, args, body, line);
    }

    // ---- expressions ----

    public Expr Expression() => Ternary(allowCondition: true);

    Expr Ternary(bool allowCondition)
    {
        var value = Or();
        while (allowCondition && IsName("if"))
        {
            int line = Next().Line;
            var test = Or();
            Expr? otherwise = AcceptName("else") ? Ternary(true) : null;
            value = new CondExpr(test, value, otherwise, line);
        }
        return value;
    }

    Expr Or()
    {
        var left = And();
        while (IsName("or")) left = new BinaryExpr("or", left, RightOf(And), Current.Line);
        return left;
    }

    Expr And()
    {
        var left = Not();
        while (IsName("and")) left = new BinaryExpr("and", left, RightOf(Not), Current.Line);
        return left;
    }

    Expr RightOf(Func<Expr> operand)
    {
        pos++;
        return operand();
    }

    Expr Not()
    {
        if (IsName("not")) return new UnaryExpr("not", RightOf(Not), Current.Line);
        return Compare();
    }

    static readonly string[] Comparisons = ["==", "!=", "<", "<=", ">", ">="];

    /// <summary>Comparisons chain as in Python: <c>a &lt; b &lt; c</c> is <c>a &lt; b and b &lt; c</c>.</summary>
    Expr Compare()
    {
        var left = Add();
        Expr? chain = null;
        while (true)
        {
            int line = Current.Line;
            string op;
            if (Current.Kind == TokenKind.Operator && Comparisons.Contains(Current.Value)) op = Next().Value;
            else if (AcceptName("in")) op = "in";
            else if (IsName("not") && tokens[pos + 1] is { Kind: TokenKind.Name, Value: "in" })
            {
                pos += 2;
                op = "not in";
            }
            else return chain ?? left;
            var right = Add();
            var comparison = new BinaryExpr(op, left, right, line);
            chain = chain is null ? comparison : new BinaryExpr("and", chain, comparison, line);
            left = right;
        }
    }

    Expr Add()
    {
        var left = Concat();
        while (IsOp("+") || IsOp("-"))
        {
            var op = Next();
            left = new BinaryExpr(op.Value, left, Concat(), op.Line);
        }
        return left;
    }

    Expr Concat()
    {
        var left = Multiply();
        while (IsOp("~"))
        {
            var op = Next();
            left = new BinaryExpr("~", left, Multiply(), op.Line);
        }
        return left;
    }

    Expr Multiply()
    {
        var left = Power();
        while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%"))
        {
            var op = Next();
            left = new BinaryExpr(op.Value, left, Power(), op.Line);
        }
        return left;
    }

    Expr Power()
    {
        var left = Unary(withFilter: true);
        while (IsOp("**"))
        {
            var op = Next();
            left = new BinaryExpr("**", left, Unary(withFilter: true), op.Line);
        }
        return left;
    }

    Expr Unary(bool withFilter)
    {
        Expr value;
        if (IsOp("-") || IsOp("+"))
        {
            var op = Next();
            value = new UnaryExpr(op.Value, Unary(withFilter: false), op.Line);
        }
        else value = Postfix(Primary());
        return withFilter ? FiltersAndTests(value) : value;
    }

    Expr FiltersAndTests(Expr value)
    {
        while (true)
        {
            if (AcceptOp("|"))
            {
                int line = Current.Line;
                var name = ExpectName();
                if (!Builtins.FilterNames.Contains(name))
                    throw new TemplateException($"line {line}: the filter '{name}' is not supported by PeftSharp's Jinja interpreter");
                var (args, kwargs) = IsOp("(") ? Arguments() : ([], []);
                value = Postfix(new FilterExpr(value, name, args, kwargs, line));
            }
            else if (IsName("is"))
            {
                int line = Next().Line;
                bool negated = AcceptName("not");
                var name = ExpectName();
                if (!Builtins.TestNames.Contains(name))
                    throw new TemplateException($"line {line}: the test 'is {name}' is not supported by PeftSharp's Jinja interpreter");
                var args = new List<Expr>();
                if (IsOp("(")) args = Arguments().Args;
                else if (Current.Kind is TokenKind.String or TokenKind.Integer or TokenKind.Float
                    || (Current.Kind == TokenKind.Name && !IsName("and") && !IsName("or") && !IsName("else") && !IsName("if") && !IsName("in") && !IsName("is")))
                    args.Add(Postfix(Primary())); // "x is divisibleby 3", "x is sameas none"
                value = new TestExpr(value, name, args, negated, line);
            }
            else return value;
        }
    }

    (List<Expr> Args, List<(string, Expr)> Kwargs) Arguments()
    {
        ExpectOp("(");
        var args = new List<Expr>();
        var kwargs = new List<(string, Expr)>();
        while (!AcceptOp(")"))
        {
            if (args.Count + kwargs.Count > 0)
            {
                ExpectOp(",");
                if (AcceptOp(")")) break;
            }
            if (Current.Kind == TokenKind.Name && tokens[pos + 1] is { Kind: TokenKind.Operator, Value: "=" })
            {
                var name = Next().Value;
                pos++;
                kwargs.Add((name, Expression()));
            }
            else args.Add(Expression());
        }
        return (args, kwargs);
    }

    Expr Postfix(Expr value)
    {
        while (true)
        {
            int line = Current.Line;
            if (AcceptOp("."))
            {
                if (Current.Kind == TokenKind.Integer) value = new IndexExpr(value, new Literal(long.Parse(Next().Value, CultureInfo.InvariantCulture), line), line);
                else value = new AttrExpr(value, ExpectName(), line);
            }
            else if (AcceptOp("[")) value = Subscript(value, line);
            else if (IsOp("("))
            {
                var (args, kwargs) = Arguments();
                value = new CallExpr(value, args, kwargs, line);
            }
            else return value;
        }
    }

    Expr Subscript(Expr target, int line)
    {
        Expr? start = IsOp(":") ? null : Expression();
        if (AcceptOp("]")) return new IndexExpr(target, start!, line);
        ExpectOp(":");
        Expr? stop = IsOp(":") || IsOp("]") ? null : Expression();
        Expr? step = null;
        if (AcceptOp(":") && !IsOp("]")) step = Expression();
        ExpectOp("]");
        return new SliceExpr(target, start, stop, step, line);
    }

    Expr Primary()
    {
        var t = Current;
        switch (t.Kind)
        {
            case TokenKind.String:
                var text = Next().Value;
                while (Current.Kind == TokenKind.String) text += Next().Value; // adjacent literals join
                return new Literal(text, t.Line);
            case TokenKind.Integer:
                pos++;
                return new Literal(long.Parse(t.Value, CultureInfo.InvariantCulture), t.Line);
            case TokenKind.Float:
                pos++;
                return new Literal(double.Parse(t.Value, CultureInfo.InvariantCulture), t.Line);
            case TokenKind.Name:
                pos++;
                return t.Value switch
                {
                    "true" or "True" => new Literal(true, t.Line),
                    "false" or "False" => new Literal(false, t.Line),
                    "none" or "None" => new Literal(null, t.Line),
                    _ => new NameExpr(t.Value, t.Line),
                };
        }
        if (AcceptOp("("))
        {
            if (AcceptOp(")")) return new ListExpr([], t.Line, IsTuple: true);
            var first = Expression();
            if (AcceptOp(")")) return first;
            var items = new List<Expr> { first };
            while (AcceptOp(",") && !IsOp(")")) items.Add(Expression());
            ExpectOp(")");
            return new ListExpr(items, t.Line, IsTuple: true);
        }
        if (AcceptOp("["))
        {
            var items = new List<Expr>();
            while (!AcceptOp("]"))
            {
                if (items.Count > 0) { ExpectOp(","); if (AcceptOp("]")) break; }
                items.Add(Expression());
            }
            return new ListExpr(items, t.Line);
        }
        if (AcceptOp("{"))
        {
            var items = new List<(Expr, Expr)>();
            while (!AcceptOp("}"))
            {
                if (items.Count > 0) { ExpectOp(","); if (AcceptOp("}")) break; }
                var key = Expression();
                ExpectOp(":");
                items.Add((key, Expression()));
            }
            return new DictExpr(items, t.Line);
        }
        throw Error("expected an expression");
    }
}
