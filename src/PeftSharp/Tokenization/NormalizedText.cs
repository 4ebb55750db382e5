using System.Text;

namespace PeftSharp.Tokenization;

/// <summary>
/// A piece of text that remembers, for each of its chars, which chars of the original input it came from
/// (HF's <c>NormalizedString</c>). Normalizers and the byte-level mapping rewrite the text; the alignment
/// lets every token still report its span in the caller's string (used to mask chat turns).
/// </summary>
internal sealed class NormalizedText
{
    // Identity alignment (the common case: no normalizer, ASCII) is stored as an offset, not two arrays.
    readonly int offset;
    readonly int[]? starts;
    readonly int[]? ends;

    public string Text { get; }

    public int Length => Text.Length;

    NormalizedText(string text, int offset, int[]? starts, int[]? ends)
    {
        Text = text;
        this.offset = offset;
        this.starts = starts;
        this.ends = ends;
    }

    /// <summary>Text taken unchanged from the input, starting at input index <paramref name="offset"/>.</summary>
    public static NormalizedText Verbatim(string text, int offset = 0) => new(text, offset, null, null);

    /// <summary>Start (inclusive) in the original input of char <paramref name="i"/>.</summary>
    public int OriginalStart(int i) => starts?[i] ?? offset + i;

    /// <summary>End (exclusive) in the original input of char <paramref name="i"/>.</summary>
    public int OriginalEnd(int i) => ends?[i] ?? offset + i + 1;

    /// <summary>The original span covered by chars [from, to); empty spans sit where they would start.</summary>
    public TokenSpan OriginalSpan(int from, int to)
    {
        if (Length == 0) return new TokenSpan(offset, offset);
        if (to <= from)
        {
            var at = from < Length ? OriginalStart(from) : OriginalEnd(Length - 1);
            return new TokenSpan(at, at);
        }
        return new TokenSpan(OriginalStart(from), OriginalEnd(to - 1));
    }

    public NormalizedText Slice(int from, int to)
    {
        var text = from == 0 && to == Length ? Text : Text[from..to];
        if (starts == null) return new NormalizedText(text, offset + from, null, null);
        return new NormalizedText(text, 0, starts[from..to], ends![from..to]);
    }

    /// <summary>
    /// Rewrites the text unit by unit (a unit is whatever <paramref name="nextUnit"/> says: a char, a code point,
    /// a base char and its combining marks); each output char points back at the span of its unit.
    /// Returns this instance when nothing changes.
    /// </summary>
    public NormalizedText Transform(Func<string, int, int> nextUnit, Func<string, string> map)
    {
        var builder = new Builder(Length);
        var changed = false;
        for (int i = 0; i < Length;)
        {
            var end = nextUnit(Text, i);
            var unit = Text[i..end];
            var mapped = map(unit);
            changed |= !string.Equals(unit, mapped, StringComparison.Ordinal);
            if (mapped.Length == unit.Length)
            {
                // Same length: keep the per-char alignment (matters for ASCII case changes in long words).
                for (int k = 0; k < mapped.Length; k++) builder.Append(mapped[k], OriginalStart(i + k), OriginalEnd(i + k));
            }
            else
            {
                foreach (var c in mapped) builder.Append(c, OriginalStart(i), OriginalEnd(end - 1));
            }
            i = end;
        }
        return changed ? builder.Build() : this;
    }

    /// <summary>The same alignment under a char-for-char rewrite of the text (e.g. ASCII to byte-level chars).</summary>
    public NormalizedText WithText(string text)
    {
        if (text.Length != Length) throw new ArgumentException("a char-for-char rewrite must keep the length", nameof(text));
        return new NormalizedText(text, offset, starts, ends);
    }

    /// <summary>Prepends <paramref name="prefix"/>, aligned to the empty span before the first char.</summary>
    public NormalizedText Prepend(string prefix)
    {
        var at = OriginalSpan(0, 0).Start;
        var builder = new Builder(Length + prefix.Length);
        foreach (var c in prefix) builder.Append(c, at, at);
        for (int i = 0; i < Length; i++) builder.Append(Text[i], OriginalStart(i), OriginalEnd(i));
        return builder.Build();
    }

    /// <summary>
    /// Prepends <paramref name="prefix"/> aligned to the first code point, as HF's <c>NormalizedString::prepend</c>
    /// (the Prepend normalizer, Metaspace): a token that is only the prefix still points at the text it precedes.
    /// An empty text stays empty.
    /// </summary>
    public NormalizedText PrependToFirst(string prefix)
    {
        if (Length == 0) return this;
        var first = OriginalSpan(0, ByteLevel.NextCodePoint(Text, 0));
        var builder = new Builder(Length + prefix.Length);
        foreach (var c in prefix) builder.Append(c, first.Start, first.End);
        for (int i = 0; i < Length; i++) builder.Append(Text[i], OriginalStart(i), OriginalEnd(i));
        return builder.Build();
    }

    /// <summary>
    /// Replaces every match of <paramref name="pattern"/> by <paramref name="content"/> (HF's <c>NormalizedString::replace</c>):
    /// the content points at the last code point of the match, since HF aligns inserted chars with the char before them.
    /// </summary>
    public NormalizedText Replace(CodePointRegex pattern, string content)
    {
        var matches = new List<Match>();
        pattern.Matches(Text, invert: false, matches);
        if (!matches.Any(m => m.IsMatch)) return this;
        var builder = new Builder(Length);
        foreach (var m in matches)
        {
            if (!m.IsMatch)
            {
                for (int i = m.Start; i < m.End; i++) builder.Append(Text[i], OriginalStart(i), OriginalEnd(i));
                continue;
            }
            var last = m.End > m.Start ? m.End - (m.End - m.Start >= 2 && char.IsLowSurrogate(Text[m.End - 1]) && char.IsHighSurrogate(Text[m.End - 2]) ? 2 : 1) : -1;
            var span = last >= 0 ? OriginalSpan(last, m.End) : m.Start > 0 ? OriginalSpan(m.Start - 1, m.Start) : new TokenSpan(0, 0);
            foreach (var c in content) builder.Append(c, span.Start, span.End);
        }
        return builder.Build();
    }

    /// <summary>Accumulates chars with their original spans.</summary>
    internal sealed class Builder(int capacity)
    {
        readonly StringBuilder text = new(capacity);
        readonly List<int> starts = new(capacity);
        readonly List<int> ends = new(capacity);

        public int Length => text.Length;

        public void Append(char c, int originalStart, int originalEnd)
        {
            text.Append(c);
            starts.Add(originalStart);
            ends.Add(originalEnd);
        }

        public NormalizedText Build() => new(text.ToString(), 0, [.. starts], [.. ends]);
    }
}

/// <summary>
/// A word produced by pre-tokenization: chars [Start, End) of a shared <see cref="NormalizedText"/>.
/// Words are spans rather than strings so that a megabyte of text does not become 250k small allocations.
/// </summary>
internal readonly record struct Word(NormalizedText Source, int Start, int End)
{
    public static Word Whole(NormalizedText text) => new(text, 0, text.Length);

    public ReadOnlySpan<char> Text => Source.Text.AsSpan(Start, End - Start);

    public int Length => End - Start;

    /// <summary>The original span of the word's chars [from, to).</summary>
    public TokenSpan OriginalSpan(int from, int to) => Source.OriginalSpan(Start + from, Start + to);
}

/// <summary>A span [Start, End) of chars in the text given to <see cref="HfTokenizer.EncodeWithOffsets"/>.</summary>
public readonly record struct TokenSpan(int Start, int End)
{
    public int Length => End - Start;

    public bool Overlaps(TokenSpan other) => Start < other.End && other.Start < End;
}
