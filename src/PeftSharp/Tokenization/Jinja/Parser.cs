namespace PeftSharp.Tokenization.Jinja;

/// <summary>
/// Recursive-descent parser for the Jinja subset chat templates use: statements here, expressions in
/// Parser.Expressions.cs.
/// </summary>
internal sealed partial class Parser
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
}
