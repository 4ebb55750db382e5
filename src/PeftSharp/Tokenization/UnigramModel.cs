using System.Collections.Concurrent;
using System.Text;

namespace PeftSharp.Tokenization;

/// <summary>
/// SentencePiece's Unigram model as HF's <c>tokenizers</c> runs it (T5, ALBERT, XLNet, mT5): each piece has a
/// log-probability score and a word is split into the pieces whose scores add up highest (Viterbi over the
/// pieces that start at each code point). A code point no piece starts with costs the lowest score minus 10 and
/// becomes unk; adjacent unks fuse into one token, which byte_fallback then spells as &lt;0xXX&gt; tokens if
/// the vocabulary has them all. Ties keep the first path found, as HF's strict comparison does.
/// </summary>
internal sealed class UnigramModel : ITokenModel
{
    const double UnkPenalty = 10.0;
    const int MaxCachedWords = 200_000;
    const int MaxCachedLength = 256; // HF caches short words only; long ones (a whole unsplit text) are rare repeats

    readonly Dictionary<string, int> vocab;
    readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> vocabBySpan;
    readonly double[] scores;
    readonly int? unkId;
    readonly bool byteFallback;
    readonly string source;
    readonly double unkScore;
    readonly int maxPieceLength;
    readonly ConcurrentDictionary<string, WordToken[]> cache = new(StringComparer.Ordinal);
    readonly ConcurrentDictionary<string, WordToken[]>.AlternateLookup<ReadOnlySpan<char>> cacheBySpan;
    int cachedWords;

    public UnigramModel(IReadOnlyList<(string Piece, double Score)> pieces, int? unkId, bool byteFallback, string source)
    {
        vocab = new Dictionary<string, int>(pieces.Count, StringComparer.Ordinal);
        scores = new double[pieces.Count];
        for (int id = 0; id < pieces.Count; id++)
        {
            vocab[pieces[id].Piece] = id; // a repeated piece keeps its last id, as HF's map does
            scores[id] = pieces[id].Score;
            maxPieceLength = Math.Max(maxPieceLength, pieces[id].Piece.Length);
        }
        if (unkId is int unk && (unk < 0 || unk >= pieces.Count))
            throw new InvalidDataException($"{source}: Unigram unk_id {unk} is outside the vocabulary of {pieces.Count} pieces");
        vocabBySpan = vocab.GetAlternateLookup<ReadOnlySpan<char>>();
        cacheBySpan = cache.GetAlternateLookup<ReadOnlySpan<char>>();
        this.unkId = unkId;
        this.byteFallback = byteFallback;
        this.source = source;
        unkScore = (scores.Length == 0 ? double.PositiveInfinity : scores.Min()) - UnkPenalty;
    }

    public IReadOnlyDictionary<string, int> Vocab => vocab;

    public void Tokenize(ReadOnlySpan<char> word, List<WordToken> output)
    {
        if (word.IsEmpty) return;
        if (cacheBySpan.TryGetValue(word, out var tokens))
        {
            output.AddRange(tokens);
            return;
        }
        tokens = Encode(word);
        if (word.Length < MaxCachedLength)
        {
            if (cachedWords >= MaxCachedWords)
            {
                cache.Clear();
                cachedWords = 0;
            }
            if (cache.TryAdd(word.ToString(), tokens)) Interlocked.Increment(ref cachedWords);
        }
        output.AddRange(tokens);
    }

    WordToken[] Encode(ReadOnlySpan<char> word)
    {
        // best[i]: the best segmentation of word[..i]: its score, where its last piece starts, that piece's id.
        var n = word.Length;
        var bestScore = new double[n + 1];
        var bestStart = new int[n + 1];
        var bestId = new int[n + 1];
        Array.Fill(bestStart, -1);
        for (int start = 0; start < n;)
        {
            var scoreHere = bestScore[start];
            var charEnd = start + (char.IsHighSurrogate(word[start]) && start + 1 < n && char.IsLowSurrogate(word[start + 1]) ? 2 : 1);
            var hasSingleChar = false;
            var longest = Math.Min(maxPieceLength, n - start);
            for (int length = 1; length <= longest; length++)
            {
                if (!vocabBySpan.TryGetValue(word.Slice(start, length), out var id)) continue;
                var end = start + length;
                var candidate = scores[id] + scoreHere;
                if (bestStart[end] < 0 || candidate > bestScore[end])
                {
                    bestScore[end] = candidate;
                    bestStart[end] = start;
                    bestId[end] = id;
                }
                if (end == charEnd) hasSingleChar = true;
            }
            if (!hasSingleChar)
            {
                var candidate = unkScore + scoreHere;
                if (bestStart[charEnd] < 0 || candidate > bestScore[charEnd])
                {
                    bestScore[charEnd] = candidate;
                    bestStart[charEnd] = start;
                    bestId[charEnd] = unkId ?? -1;
                }
            }
            start = charEnd;
        }

        // Walk back from the end; consecutive unk pieces fuse into one.
        var pieces = new List<(int Start, int End, bool Unk)>();
        for (int end = n; end > 0;)
        {
            var start = bestStart[end];
            var unk = unkId is int u ? bestId[end] == u : bestId[end] < 0;
            if (unk && pieces.Count > 0 && pieces[^1].Unk) pieces[^1] = (start, pieces[^1].End, true);
            else pieces.Add((start, end, unk));
            end = start;
        }
        pieces.Reverse();

        var tokens = new List<WordToken>(pieces.Count);
        foreach (var (start, end, _) in pieces)
        {
            var piece = word[start..end];
            if (vocabBySpan.TryGetValue(piece, out var id)) tokens.Add(new WordToken(id, start, end));
            else if (!(byteFallback && TryByteFallback(piece, start, end, tokens)))
            {
                if (unkId is not int unk) throw new InvalidOperationException(
                    $"{source}: '{piece}' has no Unigram piece and the model has no unk_id (nor byte pieces) to stand for it");
                tokens.Add(new WordToken(unk, start, end));
            }
        }
        return [.. tokens];
    }

    bool TryByteFallback(ReadOnlySpan<char> piece, int start, int end, List<WordToken> tokens)
    {
        var bytes = Encoding.UTF8.GetBytes(piece.ToArray());
        var ids = new int[bytes.Length];
        for (int k = 0; k < bytes.Length; k++)
        {
            if (!vocab.TryGetValue($"<0x{bytes[k]:X2}>", out ids[k])) return false;
        }
        foreach (var id in ids) tokens.Add(new WordToken(id, start, end));
        return true;
    }
}
