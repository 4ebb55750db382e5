using System.Globalization;

namespace PeftSharp.Tokenization.Jinja;

/// <summary>
/// Expressions, with Jinja's precedence: conditional, or, and, not, comparisons/in, + -, ~, * / // %, **,
/// unary minus, then primaries with attribute/index/call postfixes and filters/tests.
/// </summary>
internal sealed partial class Parser
{
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
