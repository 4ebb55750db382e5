namespace PeftSharp.Tokenization;

/// <summary>
/// BERT's WordPiece: greedy longest-match-first from the start of the word; pieces after the first carry the
/// continuation prefix ("##"). A word with any unmatchable rest, or longer than
/// <c>max_input_chars_per_word</c> code points, becomes a single unk token (HF's <c>WordPiece::tokenize</c>).
/// </summary>
internal sealed class WordPieceModel(
    Dictionary<string, int> vocab, string unkToken, string prefix, int maxInputCharsPerWord, string source) : ITokenModel
{
    readonly int unkId = vocab.TryGetValue(unkToken, out var id) ? id
        : throw new InvalidDataException($"{source}: the WordPiece unk_token '{unkToken}' is not in the vocabulary");

    public IReadOnlyDictionary<string, int> Vocab => vocab;

    public void Tokenize(ReadOnlySpan<char> text, List<WordToken> output)
    {
        if (text.IsEmpty) return;
        var word = text.ToString();
        var codePoints = 0;
        foreach (var _ in word.EnumerateRunes()) codePoints++;
        if (codePoints > maxInputCharsPerWord)
        {
            output.Add(new WordToken(unkId, 0, word.Length));
            return;
        }
        var first = output.Count;
        for (int start = 0; start < word.Length;)
        {
            var found = false;
            for (int end = word.Length; end > start; end = PreviousCodePointStart(word, end))
            {
                var piece = start > 0 ? prefix + word[start..end] : word[start..end];
                if (vocab.TryGetValue(piece, out var pieceId))
                {
                    output.Add(new WordToken(pieceId, start, end));
                    start = end;
                    found = true;
                    break;
                }
            }
            if (!found)
            {
                output.RemoveRange(first, output.Count - first);
                output.Add(new WordToken(unkId, 0, word.Length));
                return;
            }
        }
    }

    static int PreviousCodePointStart(string s, int end) =>
        end >= 2 && char.IsLowSurrogate(s[end - 1]) && char.IsHighSurrogate(s[end - 2]) ? end - 2 : end - 1;
}
