using System.Text.Json;

namespace PeftSharp.Tokenization;

/// <summary>The parts of transformers' tokenizer_config.json that change what <c>tokenizer(text)</c> returns.</summary>
internal sealed record TokenizerConfig(
    string? BosToken = null,
    string? EosToken = null,
    string? PadToken = null,
    string? UnkToken = null,
    string? ChatTemplate = null,
    bool? AddBosToken = null,
    bool? AddEosToken = null,
    bool CleanUpTokenizationSpaces = false)
{
    /// <summary>
    /// Parses tokenizer_config.json. A chat template may also sit in <c>chat_template.jinja</c> next to it
    /// (transformers 4.43+ writes it there), passed as <paramref name="jinjaTemplate"/>.
    /// </summary>
    public static TokenizerConfig Parse(string? json, string? jinjaTemplate, string source)
    {
        if (json == null) return new TokenizerConfig(ChatTemplate: jinjaTemplate);
        try
        {
            using var doc = JsonDocument.Parse(json);
            var e = doc.RootElement;
            return new TokenizerConfig(
                SpecialToken(e, "bos_token"), SpecialToken(e, "eos_token"), SpecialToken(e, "pad_token"), SpecialToken(e, "unk_token"),
                ChatTemplateOf(e) ?? jinjaTemplate,
                TokenizerJson.Optional(e, "add_bos_token")?.GetBoolean(),
                TokenizerJson.Optional(e, "add_eos_token")?.GetBoolean(),
                TokenizerJson.Bool(e, "clean_up_tokenization_spaces", false));
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or KeyNotFoundException)
        {
            throw new InvalidDataException($"{source}: not a valid tokenizer_config.json: {e.Message}", e);
        }
    }

    /// <summary>A special token is a string, or (older files) an AddedToken object with a <c>content</c>.</summary>
    static string? SpecialToken(JsonElement e, string name) => TokenizerJson.Optional(e, name) switch
    {
        { ValueKind: JsonValueKind.String } s => s.GetString(),
        { ValueKind: JsonValueKind.Object } o => TokenizerJson.String(o, "content"),
        _ => null,
    };

    /// <summary>A string, or a list of named templates of which we take "default" (else the first).</summary>
    static string? ChatTemplateOf(JsonElement e)
    {
        var t = TokenizerJson.Optional(e, "chat_template");
        if (t is not { } template) return null;
        if (template.ValueKind == JsonValueKind.String) return template.GetString();
        var named = template.EnumerateArray().ToList();
        var chosen = named.FirstOrDefault(x => TokenizerJson.String(x, "name") == "default");
        return TokenizerJson.String(chosen.ValueKind == JsonValueKind.Undefined ? named.FirstOrDefault() : chosen, "template");
    }
}
