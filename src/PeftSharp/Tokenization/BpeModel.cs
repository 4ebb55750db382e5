using System.Collections.Concurrent;
using System.Text;

namespace PeftSharp.Tokenization;

/// <summary>A token of one word: its id and the chars [Start, End) of the word it covers.</summary>
internal readonly record struct WordToken(int Id, int Start, int End);

/// <summary>Turns one pre-tokenized word into tokens (HF's <c>model</c>).</summary>
internal interface ITokenModel
{
    IReadOnlyDictionary<string, int> Vocab { get; }

    void Tokenize(ReadOnlySpan<char> word, List<WordToken> output);
}

/// <summary>Options of a BPE model, named as in tokenizer.json's <c>model</c> section.</summary>
internal sealed record BpeOptions(
    string? UnkToken = null,
    string? ContinuingSubwordPrefix = null,
    string? EndOfWordSuffix = null,
    bool FuseUnk = false,
    bool ByteFallback = false,
    bool IgnoreMerges = false);

/// <summary>
/// Byte-pair encoding as HF's <c>tokenizers</c> does it: start from single chars, repeatedly merge the adjacent
/// pair with the lowest merge rank (leftmost first on ties). Results are cached per word, which is what makes
/// code (a few thousand distinct words) fast.
/// </summary>
internal sealed class BpeModel : ITokenModel
{
    const int MaxCachedWords = 200_000;
    const int MaxCachedLength = 256; // like HF: without a pre-tokenizer (Llama 2) a "word" is a whole text, rarely repeated

    readonly Dictionary<string, int> vocab;
    readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> vocabBySpan;
    // (left id, right id) -> (rank, merged id), keyed as one long.
    readonly Dictionary<long, (int Rank, int Id)> merges;
    readonly BpeOptions options;
    readonly int? unkId;
    readonly ConcurrentDictionary<string, WordToken[]> cache = new(StringComparer.Ordinal);
    int cachedWords; // ConcurrentDictionary.Count takes every lock, so we count ourselves
    // Looks the cache up by span, so a cache hit allocates nothing.
    readonly ConcurrentDictionary<string, WordToken[]>.AlternateLookup<ReadOnlySpan<char>> cacheBySpan;

    public BpeModel(Dictionary<string, int> vocab, IReadOnlyList<(string Left, string Right)> mergeList, BpeOptions options, string source)
    {
        this.vocab = vocab;
        this.options = options;
        cacheBySpan = cache.GetAlternateLookup<ReadOnlySpan<char>>();
        vocabBySpan = vocab.GetAlternateLookup<ReadOnlySpan<char>>();
        if (options.UnkToken != null && vocab.TryGetValue(options.UnkToken, out var unk)) unkId = unk;
        merges = new Dictionary<long, (int, int)>(mergeList.Count);
        var prefixLength = options.ContinuingSubwordPrefix?.Length ?? 0;
        for (int rank = 0; rank < mergeList.Count; rank++)
        {
            var (left, right) = mergeList[rank];
            var continues = prefixLength > 0 && right.StartsWith(options.ContinuingSubwordPrefix!, StringComparison.Ordinal);
            var merged = left + (continues ? right[prefixLength..] : right);
            if (!vocab.TryGetValue(left, out var a) || !vocab.TryGetValue(right, out var b) || !vocab.TryGetValue(merged, out var id))
                throw new InvalidDataException($"{source}: merge #{rank} ('{left}' '{right}') uses a token that is not in the vocabulary");
            merges.TryAdd(Key(a, b), (rank, id)); // a repeated pair keeps its first (best) rank, like HF
        }
    }

    public IReadOnlyDictionary<string, int> Vocab => vocab;

    public void Tokenize(ReadOnlySpan<char> word, List<WordToken> output)
    {
        if (word.IsEmpty) return;
        if (!cacheBySpan.TryGetValue(word, out var tokens))
        {
            var key = word.ToString();
            tokens = Merge(key);
            if (key.Length >= MaxCachedLength)
            {
                output.AddRange(tokens);
                return;
            }
            if (cachedWords >= MaxCachedWords)
            {
                cache.Clear();
                cachedWords = 0;
            }
            if (cache.TryAdd(key, tokens)) Interlocked.Increment(ref cachedWords);
        }
        output.AddRange(tokens);
    }

    static long Key(int left, int right) => ((long)left << 32) | (uint)right;

    WordToken[] Merge(string word)
    {
        if (options.IgnoreMerges && vocab.TryGetValue(word, out var whole)) return [new WordToken(whole, 0, word.Length)];

        // Symbols form a linked list over the word; a merged-away symbol gets length 0.
        var symbols = InitialSymbols(word);
        int n = symbols.Count;
        var ids = new int[n]; var starts = new int[n]; var ends = new int[n]; var prev = new int[n]; var next = new int[n];
        for (int i = 0; i < n; i++)
        {
            (ids[i], starts[i], ends[i]) = symbols[i];
            prev[i] = i - 1;
            next[i] = i + 1 < n ? i + 1 : -1;
        }

        var queue = new PriorityQueue<int, long>();
        void Push(int pos)
        {
            if (next[pos] >= 0 && merges.TryGetValue(Key(ids[pos], ids[next[pos]]), out var m))
                queue.Enqueue(pos, ((long)m.Rank << 32) | (uint)pos);
        }
        for (int i = 0; i < n - 1; i++) Push(i);

        while (queue.TryDequeue(out var pos, out var priority))
        {
            if (ends[pos] == starts[pos] || next[pos] < 0) continue; // merged away, or last symbol now
            var right = next[pos];
            if (!merges.TryGetValue(Key(ids[pos], ids[right]), out var m) || m.Rank != (int)(priority >> 32)) continue; // stale entry
            ids[pos] = m.Id;
            ends[pos] = ends[right];
            starts[right] = ends[right];
            next[pos] = next[right];
            if (next[pos] >= 0) prev[next[pos]] = pos;
            if (prev[pos] >= 0) Push(prev[pos]);
            Push(pos);
        }

        var result = new List<WordToken>(n);
        for (int i = 0; i >= 0 && i < n; i = next[i]) result.Add(new WordToken(ids[i], starts[i], ends[i]));
        return [.. result];
    }

    /// <summary>One symbol per code point (with prefix/suffix), byte-fallback or unk for those not in the vocabulary.</summary>
    List<(int Id, int Start, int End)> InitialSymbols(string word)
    {
        var symbols = new List<(int Id, int Start, int End)>(word.Length);
        for (int i = 0; i < word.Length;)
        {
            var end = ByteLevel.NextCodePoint(word, i);
            var plain = (i == 0 || options.ContinuingSubwordPrefix == null) && (end < word.Length || options.EndOfWordSuffix == null);
            if (plain && vocabBySpan.TryGetValue(word.AsSpan(i, end - i), out var id))
            {
                symbols.Add((id, i, end));
                i = end;
                continue;
            }
            var piece = word[i..end];
            if (i > 0 && options.ContinuingSubwordPrefix != null) piece = options.ContinuingSubwordPrefix + piece;
            if (end == word.Length && options.EndOfWordSuffix != null) piece += options.EndOfWordSuffix;
            if (vocab.TryGetValue(piece, out id)) symbols.Add((id, i, end));
            else if (!(options.ByteFallback && TryByteFallback(piece, i, end, symbols)) && unkId is int unk)
            {
                if (options.FuseUnk && symbols.Count > 0 && symbols[^1].Id == unk) symbols[^1] = (unk, symbols[^1].Start, end);
                else symbols.Add((unk, i, end));
            }
            // With no unk token HF drops the char silently; so do we.
            i = end;
        }
        return symbols;
    }

    /// <summary>Byte tokens &lt;0xXX&gt; for every UTF-8 byte of the piece (prefix included, as HF does), if all exist.</summary>
    bool TryByteFallback(string piece, int start, int end, List<(int, int, int)> symbols)
    {
        var bytes = Encoding.UTF8.GetBytes(piece);
        var ids = new int[bytes.Length];
        for (int k = 0; k < bytes.Length; k++)
        {
            if (!vocab.TryGetValue($"<0x{bytes[k]:X2}>", out ids[k])) return false;
        }
        foreach (var id in ids) symbols.Add((id, start, end));
        return true;
    }
}
