using System.Globalization;
using System.Text;

namespace PeftSharp.Tokenization.Jinja;

internal enum TokenKind { Text, VarStart, VarEnd, BlockStart, BlockEnd, Name, String, Integer, Float, Operator, End }

/// <summary>One lexed token; <see cref="Line"/> is 1-based, for error messages.</summary>
internal readonly record struct Token(TokenKind Kind, string Value, int Line);

/// <summary>A template that cannot be parsed or rendered; the message names the construct and its line.</summary>
public sealed class TemplateException(string message) : Exception(message);

/// <summary>
/// Splits template source into text and tag tokens, applying Jinja's whitespace control as transformers
/// configures it: <c>{%-</c>/<c>-%}</c> strip all whitespace on that side, <c>trim_blocks</c> drops the first
/// newline after a block or comment tag, <c>lstrip_blocks</c> drops spaces and tabs before a block or comment tag
/// that starts its line, and one trailing newline of the source is dropped (<c>keep_trailing_newline=False</c>).
/// </summary>
internal static class Lexer
{
    static readonly string[] Operators =
        ["//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<", ">", "=", "(", ")", "[", "]", "{", "}", ",", ".", ":", "|"];

    public static List<Token> Tokenize(string source)
    {
        source = source.Replace("\r\n", "\n", StringComparison.Ordinal);
        if (source.EndsWith('\n')) source = source[..^1];
        var tokens = new List<Token>();
        int pos = 0, line = 1;
        bool stripNext = false; // the previous tag ended with "-"
        while (pos < source.Length)
        {
            int open = FindTag(source, pos);
            var text = source[pos..(open < 0 ? source.Length : open)];
            bool lineStart = pos == 0 || source[pos - 1] == '\n';
            if (open >= 0)
            {
                char kind = source[open + 1];
                char modifier = open + 2 < source.Length ? source[open + 2] : ' ';
                if (modifier == '-') text = text.TrimEnd();
                else if (kind != '{' && modifier != '+') text = LstripBlock(text, lineStart);
            }
            if (stripNext) text = text.TrimStart();
            if (text.Length > 0) tokens.Add(new Token(TokenKind.Text, text, line));
            line += Count(source, pos, open < 0 ? source.Length : open);
            if (open < 0) break;
            pos = ReadTag(source, open, ref line, tokens, out stripNext);
        }
        tokens.Add(new Token(TokenKind.End, "", line));
        return tokens;
    }

    static int FindTag(string s, int from)
    {
        for (int i = s.IndexOf('{', from); i >= 0 && i + 1 < s.Length; i = s.IndexOf('{', i + 1))
            if (s[i + 1] is '{' or '%' or '#') return i;
        return -1;
    }

    /// <summary>lstrip_blocks: spaces and tabs between the start of a line and a block tag go.</summary>
    static string LstripBlock(string text, bool lineStart)
    {
        int lineBegin = text.LastIndexOf('\n') + 1;
        if (lineBegin == 0 && !lineStart) return text;
        for (int i = lineBegin; i < text.Length; i++)
            if (text[i] is not (' ' or '\t')) return text;
        return text[..lineBegin];
    }

    static int Count(string s, int from, int to)
    {
        int n = 0;
        for (int i = from; i < to; i++) if (s[i] == '\n') n++;
        return n;
    }

    /// <summary>Reads one tag starting at <paramref name="open"/>; returns the position after it (and after any trimmed newline).</summary>
    static int ReadTag(string s, int open, ref int line, List<Token> tokens, out bool stripAfter)
    {
        char kind = s[open + 1];
        int pos = open + 2;
        if (pos < s.Length && s[pos] is '-' or '+') pos++;
        int startLine = line;
        if (kind == '#')
        {
            int close = s.IndexOf("#}", pos, StringComparison.Ordinal);
            if (close < 0) throw new TemplateException($"line {startLine}: comment '{{#' is never closed with '#}}'");
            line += Count(s, pos, close);
            stripAfter = s[close - 1] == '-' && close - 1 >= pos;
            return AfterBlock(s, close + 2, stripAfter);
        }
        bool isBlock = kind == '%';
        string closer = isBlock ? "%}" : "}}";
        tokens.Add(new Token(isBlock ? TokenKind.BlockStart : TokenKind.VarStart, "", line));
        while (true)
        {
            while (pos < s.Length && char.IsWhiteSpace(s[pos])) { if (s[pos] == '\n') line++; pos++; }
            if (pos >= s.Length) throw new TemplateException($"line {startLine}: tag is never closed with '{closer}'");
            bool dashClose = s[pos] == '-' && string.CompareOrdinal(s, pos + 1, closer, 0, 2) == 0;
            bool plusClose = s[pos] == '+' && string.CompareOrdinal(s, pos + 1, closer, 0, 2) == 0;
            if (dashClose || plusClose || string.CompareOrdinal(s, pos, closer, 0, 2) == 0)
            {
                pos += dashClose || plusClose ? 3 : 2;
                tokens.Add(new Token(isBlock ? TokenKind.BlockEnd : TokenKind.VarEnd, "", line));
                stripAfter = dashClose;
                return isBlock && !plusClose ? AfterBlock(s, pos, dashClose) : pos;
            }
            pos = ReadExpressionToken(s, pos, line, tokens);
        }
    }

    // trim_blocks: one newline right after a block or comment tag goes.
    static int AfterBlock(string s, int pos, bool stripped) => !stripped && pos < s.Length && s[pos] == '\n' ? pos + 1 : pos;

    static int ReadExpressionToken(string s, int pos, int line, List<Token> tokens)
    {
        char c = s[pos];
        if (c is '"' or '\'')
        {
            var (value, end) = ReadString(s, pos, line);
            tokens.Add(new Token(TokenKind.String, value, line));
            return end;
        }
        if (char.IsAsciiDigit(c))
        {
            int end = pos;
            while (end < s.Length && (char.IsAsciiDigit(s[end]) || s[end] == '_')) end++;
            bool isFloat = end + 1 < s.Length && s[end] == '.' && char.IsAsciiDigit(s[end + 1]);
            if (isFloat)
            {
                end++;
                while (end < s.Length && char.IsAsciiDigit(s[end])) end++;
            }
            if (end < s.Length && s[end] is 'e' or 'E' && end + 1 < s.Length && (char.IsAsciiDigit(s[end + 1]) || s[end + 1] is '-' or '+'))
            {
                isFloat = true;
                end += 2;
                while (end < s.Length && char.IsAsciiDigit(s[end])) end++;
            }
            tokens.Add(new Token(isFloat ? TokenKind.Float : TokenKind.Integer, s[pos..end].Replace("_", "", StringComparison.Ordinal), line));
            return end;
        }
        if (char.IsLetter(c) || c == '_')
        {
            int end = pos;
            while (end < s.Length && (char.IsLetterOrDigit(s[end]) || s[end] == '_')) end++;
            tokens.Add(new Token(TokenKind.Name, s[pos..end], line));
            return end;
        }
        foreach (var op in Operators)
        {
            if (string.CompareOrdinal(s, pos, op, 0, op.Length) == 0)
            {
                tokens.Add(new Token(TokenKind.Operator, op, line));
                return pos + op.Length;
            }
        }
        throw new TemplateException($"line {line}: unexpected character '{c}' in a tag");
    }

    /// <summary>A quoted string with Python's escapes (\n, \t, \', \", \\, \uXXXX).</summary>
    static (string, int) ReadString(string s, int pos, int line)
    {
        char quote = s[pos];
        var sb = new StringBuilder();
        for (int i = pos + 1; i < s.Length; i++)
        {
            char c = s[i];
            if (c == quote) return (sb.ToString(), i + 1);
            if (c != '\\' || i + 1 >= s.Length) { sb.Append(c); continue; }
            char e = s[++i];
            switch (e)
            {
                case 'n': sb.Append('\n'); break;
                case 't': sb.Append('\t'); break;
                case 'r': sb.Append('\r'); break;
                case 'b': sb.Append('\b'); break;
                case 'f': sb.Append('\f'); break;
                case '0': sb.Append('\0'); break;
                case '\\' or '\'' or '"': sb.Append(e); break;
                case '\n': break;
                case 'u' when i + 4 < s.Length:
                    sb.Append((char)int.Parse(s.AsSpan(i + 1, 4), NumberStyles.HexNumber, CultureInfo.InvariantCulture));
                    i += 4;
                    break;
                default: sb.Append('\\').Append(e); break;
            }
        }
        throw new TemplateException($"line {line}: string literal is never closed");
    }
}
