using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace PeftSharp.Tokenization;

/// <summary>
/// For one regex, a BMP char per Unicode category that can stand for a supplementary-plane code point of that
/// category. The pattern may only tell them apart by category (<c>\p{L}</c>, <c>\w</c>, <c>\s</c>), never by
/// identity: a char the pattern names — literally, in a range such as <c>[一-龥]</c>, through a case variant,
/// or through a block such as <c>\p{IsCJKUnifiedIdeographs}</c> — is never chosen, since the real code point
/// (above U+FFFF) is in none of those. Candidates are every BMP char of the category, preferred ones first.
/// </summary>
internal sealed class StandIns
{
    readonly char[] chosen = new char[32];

    public StandIns(string pattern, RegexOptions options)
    {
        var named = NamedChars.Parse(pattern);
        var ignoreCase = (options & RegexOptions.IgnoreCase) != 0 || pattern.Contains("(?i", StringComparison.Ordinal);
        foreach (var category in Enum.GetValues<UnicodeCategory>())
        {
            chosen[(int)category] = Candidates(category).FirstOrDefault(c => !named.Names(c, ignoreCase), '\u0378');
        }
    }

    public char For(UnicodeCategory category) => chosen[(int)category];

    // Rarely-named chars first (the old fixed choice for each category, with a Phags-pa letter for Lo), then
    // every other BMP char of the category, high code points first (far from the Latin and CJK ranges patterns name).
    static readonly char[] preferred =
    [
        '\u00C0', '\u00E0', '\u01C5', '\u02B0', '\uA840', '\u0300', '\u0903', '\u20DD', '\u0660', '\u2160', '\u00B2',
        '\u2000', '\u2028', '\u2029', '\u0001', '\u00AD', '\uE000', '\u203F', '\u2010', '\u2045', '\u2046', '\u00AB',
        '\u00BB', '\u00A1', '\u00AC', '\u00A2', '\u00B4', '\u00A6', '\u0378',
    ];

    /// <summary>The preferred char of the category, then the others, lazily (the first one nearly always fits).</summary>
    static IEnumerable<char> Candidates(UnicodeCategory category)
    {
        var first = preferred.FirstOrDefault(c => CharUnicodeInfo.GetUnicodeCategory(c) == category, '\0');
        if (first != '\0') yield return first;
        for (int c = 0xFFFF; c >= 0; c--)
        {
            if (c is >= 0xD800 and <= 0xDFFF || c == first) continue;
            if (CharUnicodeInfo.GetUnicodeCategory((char)c) == category) yield return (char)c;
        }
    }

    /// <summary>The chars and ranges a .NET pattern spells out, and the Unicode blocks it names.</summary>
    sealed class NamedChars
    {
        readonly List<(char First, char Last)> ranges = [];
        readonly List<Regex> blocks = [];

        public bool Names(char c, bool ignoreCase)
        {
            if (Contains(c) || blocks.Any(b => b.IsMatch(c.ToString()))) return true;
            return ignoreCase && (Contains(char.ToLowerInvariant(c)) || Contains(char.ToUpperInvariant(c)));
        }

        bool Contains(char c) => ranges.Any(r => r.First <= c && c <= r.Last);

        public static NamedChars Parse(string pattern)
        {
            var named = new NamedChars();
            var inClass = false;
            var classStart = -1; // a ']' first in a class is a literal
            char? previous = null; // the last literal in a class, for a following "-x"
            for (int i = 0; i < pattern.Length;)
            {
                var c = pattern[i];
                if (inClass && c == ']' && i != classStart)
                {
                    inClass = false;
                    previous = null;
                    i++;
                    continue;
                }
                if (!inClass && c == '[')
                {
                    inClass = true;
                    i++;
                    if (i < pattern.Length && pattern[i] == '^') i++;
                    classStart = i;
                    continue;
                }
                if (inClass && c == '-' && previous is char first && i + 1 < pattern.Length && pattern[i + 1] != ']')
                {
                    i++;
                    if (Literal(pattern, ref i, named) is char last) named.ranges.Add((first, last));
                    previous = null;
                    continue;
                }
                previous = Literal(pattern, ref i, named);
                if (previous is char single) named.ranges.Add((single, single));
            }
            return named;
        }

        /// <summary>The literal char at <paramref name="i"/> (advancing past it), or null for a class escape.</summary>
        static char? Literal(string pattern, ref int i, NamedChars named)
        {
            var c = pattern[i++];
            if (c != '\\' || i >= pattern.Length) return c;
            var e = pattern[i++];
            switch (e)
            {
                case 'u' when i + 4 <= pattern.Length: i += 4; return (char)Convert.ToInt32(pattern.Substring(i - 4, 4), 16);
                case 'x' when i + 2 <= pattern.Length: i += 2; return (char)Convert.ToInt32(pattern.Substring(i - 2, 2), 16);
                case 'p' or 'P' when i < pattern.Length && pattern[i] == '{':
                    var close = pattern.IndexOf('}', i);
                    if (close < 0) return null;
                    var name = pattern[(i + 1)..close];
                    i = close + 1;
                    if (name.StartsWith("Is", StringComparison.Ordinal)) named.blocks.Add(new Regex($@"\p{{{name}}}"));
                    return null;
                case 't': return '\t';
                case 'n': return '\n';
                case 'r': return '\r';
                case 'f': return '\f';
                case 'v': return '\v';
                case 'a': return '\a';
                case 'e': return '\u001B';
                default: return char.IsAsciiLetterOrDigit(e) ? null : e; // \w \d \s \b ...: by category, not by name
            }
        }
    }
}
