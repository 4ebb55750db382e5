using System.Text;
using System.Text.Json;

namespace PeftSharp.Tokenization;

/// <summary>The pipeline described by a tokenizer.json, built into our components.</summary>
internal sealed record TokenizerPipeline(
    ITokenModel Model,
    bool IsBpe,
    INormalizer? Normalizer,
    IPreTokenizer? PreTokenizer,
    IPostProcessor? PostProcessor,
    IDecoder? Decoder,
    IReadOnlyList<AddedToken> AddedTokens);

/// <summary>
/// Reads HF <c>tokenizers</c>' tokenizer.json. Every component type we do not implement is an error naming the
/// file, the section and what is supported, rather than a tokenizer that silently encodes differently.
/// </summary>
internal static class TokenizerJson
{
    public static TokenizerPipeline Read(string json, string source)
    {
        using var doc = JsonDocument.Parse(json);
        var root = doc.RootElement;
        var model = Model(root.GetProperty("model"), source, out var isBpe);
        return new TokenizerPipeline(
            model,
            isBpe,
            Optional(root, "normalizer") is { } n ? Normalizer(n, source) : null,
            Optional(root, "pre_tokenizer") is { } p ? PreTokenizer(p, source) : null,
            Optional(root, "post_processor") is { } pp ? PostProcessor(pp, source) : null,
            Optional(root, "decoder") is { } d ? Decoder(d, source) : null,
            Optional(root, "added_tokens") is { } a ? [.. a.EnumerateArray().Select(AddedToken)] : []);
    }

    static ITokenModel Model(JsonElement e, string source, out bool isBpe)
    {
        // Old files omit the type; HF then guesses from the fields present, and so do we.
        var type = String(e, "type")
            ?? (e.TryGetProperty("merges", out _) ? "BPE" : e.TryGetProperty("max_input_chars_per_word", out _) ? "WordPiece"
                : Optional(e, "vocab") is { ValueKind: JsonValueKind.Array } ? "Unigram" : null);
        isBpe = type == "BPE";
        switch (type)
        {
            case "BPE":
                if (Optional(e, "dropout") is { } dropout && dropout.GetDouble() != 0)
                    throw new NotSupportedException($"{source}: model.dropout = {dropout} makes BPE random; only deterministic BPE is supported");
                var merges = e.GetProperty("merges").EnumerateArray().Select(m => Merge(m, source)).ToList();
                var options = new BpeOptions(
                    String(e, "unk_token"), String(e, "continuing_subword_prefix"), String(e, "end_of_word_suffix"),
                    Bool(e, "fuse_unk", false), Bool(e, "byte_fallback", false), Bool(e, "ignore_merges", false));
                return new BpeModel(Vocab(e), merges, options, source);
            case "WordPiece":
                return new WordPieceModel(Vocab(e), String(e, "unk_token") ?? "[UNK]", String(e, "continuing_subword_prefix") ?? "##",
                    Optional(e, "max_input_chars_per_word")?.GetInt32() ?? 100, source);
            case "Unigram":
                // vocab is a list of [piece, score]; the id of a piece is its index.
                var pieces = e.GetProperty("vocab").EnumerateArray().Select(p => (p[0].GetString()!, p[1].GetDouble())).ToList();
                return new UnigramModel(pieces, Optional(e, "unk_id")?.GetInt32(), Bool(e, "byte_fallback", false), source);
            default:
                throw new NotSupportedException($"{source}: model type '{type}' is not supported (supported: BPE, WordPiece, Unigram)");
        }
    }

    static Dictionary<string, int> Vocab(JsonElement e) =>
        e.GetProperty("vocab").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetInt32(), StringComparer.Ordinal);

    /// <summary>A pattern is {"String": literal} or {"Regex": pattern} (Split, Replace).</summary>
    static CodePointRegex Pattern(JsonElement e, string source, string what)
    {
        var pattern = e.GetProperty("pattern");
        var regex = pattern.TryGetProperty("Regex", out var r) ? r.GetString()!
            : System.Text.RegularExpressions.Regex.Escape(pattern.GetProperty("String").GetString()!);
        return new CodePointRegex(regex, $"{source}: {what}");
    }

    /// <summary>A one-char setting such as Metaspace's replacement or Strip's content.</summary>
    static char Char(JsonElement e, string name, char fallback, string source, string what)
    {
        var s = String(e, name);
        if (s == null) return fallback;
        if (s.Length != 1) throw new NotSupportedException($"{source}: {what} {name} '{s}' is not a single BMP char; only those are supported");
        return s[0];
    }

    /// <summary>A merge is "left right" (older files) or ["left", "right"] (newer, allows spaces in tokens).</summary>
    static (string, string) Merge(JsonElement m, string source)
    {
        if (m.ValueKind == JsonValueKind.Array) return (m[0].GetString()!, m[1].GetString()!);
        var parts = m.GetString()!.Split(' ');
        if (parts.Length != 2) throw new InvalidDataException($"{source}: merge '{m.GetString()}' is not two tokens separated by one space");
        return (parts[0], parts[1]);
    }

    static AddedToken AddedToken(JsonElement e) => new(
        e.GetProperty("id").GetInt32(), e.GetProperty("content").GetString()!, Bool(e, "special", false),
        Bool(e, "single_word", false), Bool(e, "lstrip", false), Bool(e, "rstrip", false), Bool(e, "normalized", true));

    static INormalizer Normalizer(JsonElement e, string source)
    {
        var type = String(e, "type");
        switch (type)
        {
            case "BertNormalizer":
                var lowercase = Bool(e, "lowercase", true);
                return new BertNormalizer(Bool(e, "clean_text", true), Bool(e, "handle_chinese_chars", true),
                    Optional(e, "strip_accents")?.GetBoolean() ?? lowercase, lowercase); // null strip_accents follows lowercase
            case "Lowercase": return new Lowercase();
            case "NFC": return new UnicodeNormalizer(NormalizationForm.FormC);
            case "NFD": return new UnicodeNormalizer(NormalizationForm.FormD);
            case "NFKC": return new UnicodeNormalizer(NormalizationForm.FormKC);
            case "NFKD": return new UnicodeNormalizer(NormalizationForm.FormKD);
            case "Sequence":
                return new SequenceNormalizer([.. e.GetProperty("normalizers").EnumerateArray().Select(x => Normalizer(x, source))]);
            case "Prepend": return new PrependNormalizer(e.GetProperty("prepend").GetString()!);
            case "Replace": return new ReplaceNormalizer(Pattern(e, source, "normalizer Replace"), e.GetProperty("content").GetString()!);
            case "Strip": return new StripNormalizer(Bool(e, "strip_left", true), Bool(e, "strip_right", true));
            case "StripAccents": return new StripAccentsNormalizer();
            case "Precompiled":
                if (String(e, "precompiled_charsmap") is not { Length: > 0 } charsmap)
                    throw new InvalidDataException($"{source}: normalizer Precompiled has no precompiled_charsmap; re-save the tokenizer with a current tokenizers");
                try { return new PrecompiledNormalizer(Convert.FromBase64String(charsmap), source); }
                catch (FormatException) { throw new InvalidDataException($"{source}: normalizer Precompiled: precompiled_charsmap is not base64"); }
            default:
                throw new NotSupportedException($"{source}: normalizer type '{type}' is not supported (supported: "
                    + "BertNormalizer, Lowercase, NFC, NFD, NFKC, NFKD, Precompiled, Prepend, Replace, Strip, StripAccents, Sequence)");
        }
    }

    static IPreTokenizer PreTokenizer(JsonElement e, string source)
    {
        var type = String(e, "type");
        switch (type)
        {
            case "ByteLevel": return new ByteLevelPreTokenizer(Bool(e, "add_prefix_space", true), Bool(e, "use_regex", true));
            case "Split":
                return new SplitPreTokenizer(Pattern(e, source, "pre_tokenizer Split"),
                    Splitting.ParseBehavior(String(e, "behavior") ?? "Isolated", source), Bool(e, "invert", false));
            case "Metaspace":
                return new MetaspacePreTokenizer(Char(e, "replacement", '\u2581', source, "pre_tokenizer Metaspace"),
                    MetaspacePreTokenizer.ParseScheme(String(e, "prepend_scheme"), Optional(e, "add_prefix_space")?.GetBoolean(), source),
                    Bool(e, "split", true));
            case "Digits": return new DigitsPreTokenizer(Bool(e, "individual_digits", false));
            case "BertPreTokenizer": return new BertPreTokenizer();
            case "Whitespace": return new WhitespacePreTokenizer();
            case "WhitespaceSplit": return new WhitespaceSplitPreTokenizer();
            case "Punctuation": return new PunctuationPreTokenizer(Splitting.ParseBehavior(String(e, "behavior") ?? "Isolated", source));
            case "Sequence":
                return new SequencePreTokenizer([.. e.GetProperty("pretokenizers").EnumerateArray().Select(x => PreTokenizer(x, source))]);
            default:
                throw new NotSupportedException($"{source}: pre_tokenizer type '{type}' is not supported (supported: ByteLevel, "
                    + "Split, Digits, BertPreTokenizer, Whitespace, WhitespaceSplit, Punctuation, Metaspace, Sequence)");
        }
    }

    static IPostProcessor PostProcessor(JsonElement e, string source)
    {
        var type = String(e, "type");
        switch (type)
        {
            case "TemplateProcessing":
                var specials = e.GetProperty("special_tokens");
                return new TemplateProcessor([.. e.GetProperty("single").EnumerateArray().Select(item =>
                {
                    if (item.TryGetProperty("Sequence", out _)) return null;
                    var name = item.GetProperty("SpecialToken").GetProperty("id").GetString()!;
                    if (!specials.TryGetProperty(name, out var special))
                        throw new InvalidDataException($"{source}: post_processor template uses '{name}' but special_tokens does not define it");
                    return special.GetProperty("ids").EnumerateArray().Select(i => i.GetInt32()).ToArray();
                })]);
            case "BertProcessing":
            case "RobertaProcessing":
                // [CLS] $A [SEP] / <s> $A </s>: each given as [token, id].
                return new TemplateProcessor([[e.GetProperty("cls")[1].GetInt32()], null, [e.GetProperty("sep")[1].GetInt32()]]);
            case "ByteLevel": return new NoSpecialTokens();
            case "Sequence":
                return new SequenceProcessor([.. e.GetProperty("processors").EnumerateArray().Select(x => PostProcessor(x, source))]);
            default:
                throw new NotSupportedException($"{source}: post_processor type '{type}' is not supported "
                    + "(supported: TemplateProcessing, BertProcessing, RobertaProcessing, ByteLevel, Sequence)");
        }
    }

    static IDecoder Decoder(JsonElement e, string source)
    {
        var type = String(e, "type");
        return type switch
        {
            "ByteLevel" => new ByteLevelDecoder(),
            "WordPiece" => new WordPieceDecoder(String(e, "prefix") ?? "##", Bool(e, "cleanup", true)),
            "Sequence" => new SequenceDecoder([.. e.GetProperty("decoders").EnumerateArray().Select(x => Decoder(x, source))]),
            "Replace" => new ReplaceDecoder(Pattern(e, source, "decoder Replace"), e.GetProperty("content").GetString()!),
            "ByteFallback" => new ByteFallbackDecoder(),
            "Fuse" => new FuseDecoder(),
            "Strip" => new StripDecoder(Char(e, "content", ' ', source, "decoder Strip"),
                Optional(e, "start")?.GetInt32() ?? 0, Optional(e, "stop")?.GetInt32() ?? 0),
            "Metaspace" => new MetaspaceDecoder(Char(e, "replacement", '\u2581', source, "decoder Metaspace"),
                MetaspacePreTokenizer.ParseScheme(String(e, "prepend_scheme"), Optional(e, "add_prefix_space")?.GetBoolean(), source)),
            _ => throw new NotSupportedException($"{source}: decoder type '{type}' is not supported "
                + "(supported: ByteLevel, WordPiece, Replace, ByteFallback, Fuse, Strip, Metaspace, Sequence)"),
        };
    }

    /// <summary>The property, or null when it is missing or JSON null.</summary>
    internal static JsonElement? Optional(JsonElement e, string name) =>
        e.ValueKind == JsonValueKind.Object && e.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

    internal static string? String(JsonElement e, string name) => Optional(e, name)?.GetString();

    internal static bool Bool(JsonElement e, string name, bool fallback) => Optional(e, name)?.GetBoolean() ?? fallback;
}
