namespace PeftSharp.Tokenization;

/// <summary>Token ids and, for each, the chars of the input it came from ((0, 0) for inserted special tokens).</summary>
public sealed record TokenizedText(int[] Ids, TokenSpan[] Offsets);

/// <summary>
/// A Hugging Face tokenizer read from a model folder (tokenizer.json + tokenizer_config.json), giving the same ids
/// as transformers' <c>tokenizer(text)["input_ids"]</c> and the same text as <c>tokenizer.decode(ids)</c>.
/// Supports byte-level BPE (GPT-2, Llama 3, Qwen2, DeepSeek V3, SmolLM), SentencePiece BPE (Llama 2, Mistral, Gemma),
/// Unigram (T5, ALBERT, XLM-R) and WordPiece (BERT); docs/tokenizers.md lists every component.
/// <para>
/// The pipeline is HF's: added tokens are cut out of the raw text first, then each remaining run is normalized,
/// pre-tokenized into words, and each word encoded by the model; the post-processor adds BOS/CLS/SEP.
/// </para>
/// </summary>
public sealed class HfTokenizer
{
    readonly TokenizerPipeline pipeline;
    readonly AddedTokenMatcher rawAddedTokens;
    readonly AddedTokenMatcher normalizedAddedTokens;
    readonly Dictionary<int, AddedToken> addedById;
    readonly HashSet<string> specialContents;
    readonly Dictionary<string, int> tokenToId;
    readonly string?[] idToToken;
    readonly IPostProcessor? postProcessor;
    readonly bool cleanUpSpaces;

    HfTokenizer(TokenizerPipeline pipeline, TokenizerConfig config)
    {
        this.pipeline = pipeline;
        var added = pipeline.AddedTokens;
        rawAddedTokens = new AddedTokenMatcher(added.Where(t => !t.Normalized).Select(t => (t.Content, t)));
        normalizedAddedTokens = new AddedTokenMatcher(added.Where(t => t.Normalized)
            .Select(t => (pipeline.Normalizer?.Normalize(NormalizedText.Verbatim(t.Content)).Text ?? t.Content, t)));
        addedById = added.ToDictionary(t => t.Id);
        specialContents = [.. added.Where(t => t.Special).Select(t => t.Content)];

        tokenToId = new Dictionary<string, int>(pipeline.Model.Vocab, StringComparer.Ordinal);
        foreach (var t in added) tokenToId[t.Content] = t.Id;
        idToToken = new string?[tokenToId.Values.DefaultIfEmpty(-1).Max() + 1];
        foreach (var (token, id) in pipeline.Model.Vocab) idToToken[id] = token;
        foreach (var t in added) idToToken[t.Id] = t.Content;

        BosToken = config.BosToken;
        EosToken = config.EosToken;
        PadToken = config.PadToken;
        UnkToken = config.UnkToken;
        ChatTemplateJinja = config.ChatTemplate;
        cleanUpSpaces = config.CleanUpTokenizationSpaces && !pipeline.IsBpe; // transformers 5 skips it for BPE
        postProcessor = pipeline.PostProcessor;
        if (config.AddBosToken != null || config.AddEosToken != null)
        {
            // transformers 5 rebuilds the post-processor as "[bos] $A [eos]" when the config sets either flag.
            var template = new List<int[]?>();
            if (config.AddBosToken == true && BosId is int bos) template.Add([bos]);
            template.Add(null);
            if (config.AddEosToken == true && EosId is int eos) template.Add([eos]);
            postProcessor = new TemplateProcessor(template);
        }
    }

    /// <summary>
    /// Loads <c>tokenizer.json</c> and, if present, <c>tokenizer_config.json</c> and <c>chat_template.jinja</c> from a model folder.
    /// </summary>
    public static HfTokenizer Load(string folder)
    {
        var path = Path.Combine(folder, "tokenizer.json");
        if (!File.Exists(path))
            throw new FileNotFoundException(
                $"no tokenizer.json in '{folder}': only tokenizers saved by HF tokenizers/transformers (\"fast\" tokenizers) are supported", path);
        var configPath = Path.Combine(folder, "tokenizer_config.json");
        var jinjaPath = Path.Combine(folder, "chat_template.jinja");
        foreach (var f in new[] { path, configPath, jinjaPath })
            if (File.Exists(f)) IO.RegularFile.Require(f);
        return FromJson(File.ReadAllText(path), File.Exists(configPath) ? File.ReadAllText(configPath) : null,
            File.Exists(jinjaPath) ? File.ReadAllText(jinjaPath) : null, path);
    }

    /// <summary>Builds a tokenizer from the text of a tokenizer.json (and optionally tokenizer_config.json).</summary>
    public static HfTokenizer FromJson(
        string tokenizerJson, string? tokenizerConfigJson = null, string? chatTemplate = null, string source = "tokenizer.json")
    {
        var pipeline = TokenizerJson.Read(tokenizerJson, source);
        var config = TokenizerConfig.Parse(tokenizerConfigJson, chatTemplate, Path.ChangeExtension(source, null) + "_config.json");
        return new HfTokenizer(pipeline, config);
    }

    /// <summary>Number of distinct tokens, added tokens included (transformers' <c>len(tokenizer)</c>).</summary>
    public int VocabSize => tokenToId.Count;

    public string? BosToken { get; }
    public string? EosToken { get; }
    public string? PadToken { get; }
    public string? UnkToken { get; }
    public int? BosId => BosToken is null ? null : TokenToId(BosToken);
    public int? EosId => EosToken is null ? null : TokenToId(EosToken);
    public int? PadId => PadToken is null ? null : TokenToId(PadToken);
    public int? UnkId => UnkToken is null ? null : TokenToId(UnkToken);

    /// <summary>The Jinja source of the chat template (tokenizer_config.json or chat_template.jinja), if any.</summary>
    public string? ChatTemplateJinja { get; }

    /// <summary>
    /// The chat template from <see cref="ChatTemplateJinja"/>, else a ChatML or Llama 3 fallback when the vocabulary has
    /// their markers; throws if there is neither, or if the template uses a construct the Jinja interpreter does not know.
    /// </summary>
    public ChatTemplate GetChatTemplate() => ChatTemplate.For(this);

    public int? TokenToId(string token) => tokenToId.TryGetValue(token, out var id) ? id : null;

    public string? IdToToken(int id) => id >= 0 && id < idToToken.Length ? idToToken[id] : null;

    /// <summary>Whether the id is an added token marked special (skipped by <c>Decode(skipSpecialTokens: true)</c>).</summary>
    public bool IsSpecial(int id) => addedById.TryGetValue(id, out var t) && t.Special;

    /// <summary>Token ids of <paramref name="text"/>; special tokens written in the text are always recognised.</summary>
    public int[] Encode(string text, bool addSpecialTokens = true) => EncodeWithOffsets(text, addSpecialTokens).Ids;

    /// <summary>Token ids with the span of <paramref name="text"/> each came from (HF's offset mapping, untrimmed).</summary>
    public TokenizedText EncodeWithOffsets(string text, bool addSpecialTokens = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>(text.Length / 3 + 4);
        var offsets = new List<TokenSpan>(ids.Capacity);
        var segments = new List<Segment>();
        rawAddedTokens.Split(NormalizedText.Verbatim(text), segments);
        var words = new List<Word>();
        var tokens = new List<WordToken>();
        foreach (var (raw, rawId) in segments)
        {
            if (rawId is int addedId) { Add(addedId, raw.OriginalSpan(0, raw.Length)); continue; }
            var normalized = pipeline.Normalizer?.Normalize(raw) ?? raw;
            var pieces = new List<Segment>();
            if (normalizedAddedTokens.IsEmpty) pieces.Add(new Segment(normalized, null));
            else normalizedAddedTokens.Split(normalized, pieces);
            foreach (var (piece, pieceId) in pieces)
            {
                if (pieceId is int id) { Add(id, piece.OriginalSpan(0, piece.Length)); continue; }
                words.Clear();
                words.Add(Word.Whole(piece));
                pipeline.PreTokenizer?.PreTokenize(words);
                foreach (var word in words)
                {
                    tokens.Clear();
                    pipeline.Model.Tokenize(word.Text, tokens);
                    foreach (var t in tokens) Add(t.Id, word.OriginalSpan(t.Start, t.End));
                }
            }
        }
        if (addSpecialTokens) postProcessor?.AddSpecialTokens(ids, offsets);
        return new TokenizedText([.. ids], [.. offsets]);

        void Add(int id, TokenSpan span)
        {
            ids.Add(id);
            offsets.Add(span);
        }
    }

    /// <summary>Text of the ids, as transformers' <c>tokenizer.decode(ids, skip_special_tokens=...)</c>; unknown ids are skipped.</summary>
    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens = false)
    {
        var tokens = new List<string>();
        foreach (var id in ids)
        {
            if (IdToToken(id) is not { } token) continue;
            if (skipSpecialTokens && specialContents.Contains(token)) continue;
            tokens.Add(token);
        }
        var text = pipeline.Decoder == null ? string.Join(' ', tokens) : string.Concat(pipeline.Decoder.DecodeChain(tokens));
        return cleanUpSpaces ? WordPieceDecoder.CleanUp(text, doNot: false) : text;
    }
}
