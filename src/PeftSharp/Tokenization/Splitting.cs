using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace PeftSharp.Tokenization;

/// <summary>What a split does with the parts that matched (HF's <c>SplitDelimiterBehavior</c>).</summary>
internal enum SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous }

/// <summary>A range of a piece and whether the pattern matched it; a piece's ranges cover it end to end.</summary>
internal readonly record struct Match(int Start, int End, bool IsMatch);

/// <summary>HF's <c>NormalizedString::split</c>: find matches, then keep, drop or glue them by behavior.</summary>
internal static class Splitting
{
    /// <summary>Appends the matches in a word's text to <paramref name="matches"/>.</summary>
    public delegate void Finder(ReadOnlySpan<char> text, List<Match> matches);

    /// <summary>Replaces every word by its non-empty parts.</summary>
    public static void SplitAll(List<Word> words, Finder find, SplitBehavior behavior)
    {
        var result = new List<Word>(words.Count);
        var matches = new List<Match>(); // reused: one list per call, not per word
        foreach (var word in words)
        {
            matches.Clear();
            find(word.Text, matches);
            if (behavior == SplitBehavior.Isolated)
            {
                // The common case (every byte-level regex split): every range is kept as is.
                foreach (var m in matches) Add(m.Start, m.End);
            }
            else
            {
                foreach (var (start, end) in Apply(matches, behavior)) Add(start, end);
            }

            void Add(int start, int end)
            {
                if (end > start) result.Add(new Word(word.Source, word.Start + start, word.Start + end));
            }
        }
        words.Clear();
        words.AddRange(result);
    }

    static List<(int Start, int End)> Apply(List<Match> matches, SplitBehavior behavior)
    {
        var kept = new List<(int Start, int End)>(matches.Count);
        var previousMatch = false;
        switch (behavior)
        {
            case SplitBehavior.Removed:
                foreach (var m in matches) if (!m.IsMatch) kept.Add((m.Start, m.End));
                break;
            case SplitBehavior.Isolated:
                foreach (var m in matches) kept.Add((m.Start, m.End));
                break;
            case SplitBehavior.MergedWithPrevious:
                foreach (var m in matches)
                {
                    if (m.IsMatch && !previousMatch && kept.Count > 0) kept[^1] = (kept[^1].Start, m.End);
                    else kept.Add((m.Start, m.End));
                    previousMatch = m.IsMatch;
                }
                break;
            case SplitBehavior.MergedWithNext:
                for (int i = matches.Count - 1; i >= 0; i--)
                {
                    var m = matches[i];
                    if (m.IsMatch && !previousMatch && kept.Count > 0) kept[^1] = (m.Start, kept[^1].End);
                    else kept.Add((m.Start, m.End));
                    previousMatch = m.IsMatch;
                }
                kept.Reverse();
                break;
            case SplitBehavior.Contiguous:
                foreach (var m in matches)
                {
                    if (m.IsMatch == previousMatch && kept.Count > 0) kept[^1] = (kept[^1].Start, m.End);
                    else kept.Add((m.Start, m.End));
                    previousMatch = m.IsMatch;
                }
                break;
        }
        return kept;
    }

    /// <summary>Every code point for which <paramref name="predicate"/> holds is a match of its own.</summary>
    public static void CodePointMatches(ReadOnlySpan<char> text, Func<Rune, bool> predicate, List<Match> matches)
    {
        var last = 0;
        for (int i = 0; i < text.Length;)
        {
            Rune.DecodeFromUtf16(text[i..], out var rune, out var length); // a lone surrogate reads as U+FFFD, length 1
            var end = i + length;
            if (predicate(rune))
            {
                if (last < i) matches.Add(new Match(last, i, false));
                matches.Add(new Match(i, end, true));
                last = end;
            }
            i = end;
        }
        if (last < text.Length || text.Length == 0) matches.Add(new Match(last, text.Length, false));
    }

    public static SplitBehavior ParseBehavior(string name, string source) => name switch
    {
        "Removed" => SplitBehavior.Removed,
        "Isolated" => SplitBehavior.Isolated,
        "MergedWithPrevious" => SplitBehavior.MergedWithPrevious,
        "MergedWithNext" => SplitBehavior.MergedWithNext,
        "Contiguous" => SplitBehavior.Contiguous,
        _ => throw new NotSupportedException($"{source}: split behavior '{name}' is unknown"),
    };
}

/// <summary>
/// A pre-tokenizer regex that sees code points the way HF's Oniguruma does. .NET regexes walk UTF-16 chars,
/// so an emoji or a supplementary-plane letter would be two surrogates of category Cs and patterns such as
/// <c>[^\r\n\p{L}\p{N}]?\p{L}+</c> would split differently. Texts with surrogate pairs are therefore matched
/// on a stand-in string with one BMP char of the same Unicode category per code point. The stand-in must be
/// one the pattern does not name (DeepSeek V3 isolates <c>[一-龥]</c>, so U+4E00 would turn a hieroglyph into
/// a CJK ideograph): see <see cref="StandIns"/>.
/// </summary>
internal sealed class CodePointRegex
{
    readonly Regex regex;
    readonly StandIns standIns;

    public CodePointRegex(Regex regex)
    {
        this.regex = regex;
        standIns = new StandIns(regex.ToString(), regex.Options);
    }

    public CodePointRegex(string pattern, string source)
    {
        try
        {
            regex = new Regex(pattern, RegexOptions.Compiled | RegexOptions.CultureInvariant);
        }
        catch (ArgumentException e)
        {
            throw new NotSupportedException($"{source}: the split regex '{pattern}' is not valid in .NET: {e.Message}", e);
        }
        standIns = new StandIns(pattern, regex.Options);
    }

    /// <summary>The BMP char that stands for every supplementary code point of <paramref name="category"/>.</summary>
    internal char StandIn(UnicodeCategory category) => standIns.For(category);

    /// <summary>Matches and the gaps between them, covering <paramref name="text"/> (HF's regex <c>find_matches</c>).</summary>
    public void Matches(ReadOnlySpan<char> text, bool invert, List<Match> matches)
    {
        if (text.Length == 0)
        {
            matches.Add(new Match(0, 0, invert));
            return;
        }
        var subject = StandIn(text, out var toText);
        var previous = 0;
        foreach (var m in regex.EnumerateMatches(subject))
        {
            var start = toText?[m.Index] ?? m.Index;
            var end = toText?[m.Index + m.Length] ?? m.Index + m.Length;
            if (previous < start) matches.Add(new Match(previous, start, invert));
            matches.Add(new Match(start, end, !invert));
            previous = end;
        }
        if (previous < text.Length) matches.Add(new Match(previous, text.Length, invert));
    }

    /// <summary>The text with one char per code point, and where each stand-in char starts in the text.</summary>
    ReadOnlySpan<char> StandIn(ReadOnlySpan<char> text, out int[]? toText)
    {
        toText = null;
        if (!text.ContainsAnyInRange('\uD800', '\uDFFF')) return text;
        var subject = new StringBuilder(text.Length);
        var starts = new List<int>(text.Length + 1);
        for (int i = 0; i < text.Length;)
        {
            Rune.DecodeFromUtf16(text[i..], out var rune, out var length);
            // A lone surrogate (invalid UTF-16) keeps its own char.
            subject.Append(length == 1 ? text[i] : standIns.For(Rune.GetUnicodeCategory(rune)));
            starts.Add(i);
            i += length;
        }
        starts.Add(text.Length);
        toText = [.. starts];
        return subject.ToString();
    }
}
