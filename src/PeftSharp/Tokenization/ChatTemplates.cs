using System.Text.Json.Nodes;
using PeftSharp.Tokenization.Jinja;

namespace PeftSharp.Tokenization;

/// <summary>One turn of a conversation; <see cref="Role"/> is "system", "user", "assistant" (or "tool").</summary>
public sealed record ChatMessage(string Role, string Content);

/// <summary>
/// A rendered conversation and the character spans the model should learn to write: each assistant reply and
/// the end-of-turn marker after it. <see cref="FromGenerationMarkers"/> tells whether the template marked them
/// with <c>{% generation %}</c> (transformers' <c>return_assistant_tokens_mask</c>) or they were found by
/// locating each assistant message in the text.
/// </summary>
public sealed record RenderedChat(string Text, IReadOnlyList<TokenSpan> AssistantSpans, bool FromGenerationMarkers);

/// <summary>Token ids of a rendered conversation, and which of them belong to assistant turns (the loss mask).</summary>
public sealed record ChatEncoding(int[] Ids, bool[] AssistantMask);

/// <summary>
/// A model's chat template: its Jinja source (tokenizer_config.json's <c>chat_template</c> or
/// <c>chat_template.jinja</c>) run by PeftSharp's Jinja interpreter to the same string as transformers'
/// <c>apply_chat_template</c>. When a model folder has no template, <see cref="For"/> falls back to
/// ChatML or Llama 3 if the vocabulary has their markers.
/// </summary>
public sealed class ChatTemplate
{
    /// <summary>Markers that close a turn; a located assistant reply's span extends over the one right after it.</summary>
    static readonly string[] EndOfTurnMarkers =
        ["<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<｜end▁of▁sentence｜>", "<|endoftext|>", "</s>"];

    readonly JinjaTemplate template;
    readonly Dictionary<string, string> specialTokens;

    ChatTemplate(string source, JinjaTemplate template, Dictionary<string, string> specialTokens, string name)
    {
        Source = source;
        this.template = template;
        this.specialTokens = specialTokens;
        Name = name;
    }

    /// <summary>The Jinja source.</summary>
    public string Source { get; }

    /// <summary>"chat_template" for the model's own template, or the fallback's name ("ChatML", "Llama 3").</summary>
    public string Name { get; }

    /// <summary>Whether the template marks assistant text with <c>{% generation %}</c>.</summary>
    public bool HasGenerationMarkers => template.HasGenerationMarkers;

    /// <summary>The clock <c>strftime_now</c> reads: local time, as in transformers, unless <see cref="Parse"/> was given one.</summary>
    public Func<DateTime> Now { get; private init; } = () => DateTime.Now;

    /// <summary>
    /// Parses a chat template. <paramref name="specialTokens"/> are the variables transformers passes from the
    /// tokenizer's special tokens (<c>bos_token</c>, <c>eos_token</c>, ...); null entries are left undefined.
    /// <paramref name="now"/> replaces the clock that <c>strftime_now</c> reads (for reproducible renders).
    /// </summary>
    /// <exception cref="TemplateException">the template uses a construct the interpreter does not know (named, with its line).</exception>
    public static ChatTemplate Parse(string jinja, IReadOnlyDictionary<string, string?>? specialTokens = null,
        string name = "chat_template", Func<DateTime>? now = null)
    {
        ArgumentNullException.ThrowIfNull(jinja);
        var tokens = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (key, value) in specialTokens ?? new Dictionary<string, string?>())
            if (value != null) tokens[key] = value;
        return new ChatTemplate(jinja, JinjaTemplate.Parse(jinja), tokens, name) { Now = now ?? (() => DateTime.Now) };
    }

    /// <summary>Whether <see cref="For"/> finds a template (the tokenizer's own or a fallback), without parsing it.</summary>
    public static bool Exists(HfTokenizer tokenizer) => SourceFor(tokenizer) != null;

    /// <summary>The tokenizer's own template, else a fallback chosen by its vocabulary; null when neither exists.</summary>
    public static ChatTemplate? TryFor(HfTokenizer tokenizer)
    {
        if (SourceFor(tokenizer) is not var (source, name)) return null;
        var tokens = new Dictionary<string, string?>
        {
            ["bos_token"] = tokenizer.BosToken ?? (name == "Llama 3" ? "<|begin_of_text|>" : null),
            ["eos_token"] = tokenizer.EosToken, ["unk_token"] = tokenizer.UnkToken, ["pad_token"] = tokenizer.PadToken,
        };
        try
        {
            return Parse(source, tokens, name);
        }
        catch (TemplateException e)
        {
            throw new TemplateException($"{name}: {e.Message}");
        }
    }

    static (string Source, string Name)? SourceFor(HfTokenizer tokenizer)
    {
        if (!string.IsNullOrWhiteSpace(tokenizer.ChatTemplateJinja)) return (tokenizer.ChatTemplateJinja, "chat_template");
        if (tokenizer.TokenToId("<|im_start|>") != null && tokenizer.TokenToId("<|im_end|>") != null) return (FallbackTemplates.ChatML, "ChatML");
        if (tokenizer.TokenToId("<|start_header_id|>") != null && tokenizer.TokenToId("<|eot_id|>") != null) return (FallbackTemplates.Llama3, "Llama 3");
        return null;
    }

    /// <summary>The tokenizer's template or a fallback; throws saying what is missing when there is neither.</summary>
    public static ChatTemplate For(HfTokenizer tokenizer) => TryFor(tokenizer) ?? throw new InvalidOperationException(
        "the tokenizer has no chat_template (in tokenizer_config.json or chat_template.jinja) and its vocabulary has no ChatML "
        + "(<|im_start|>, <|im_end|>) or Llama 3 (<|start_header_id|>, <|eot_id|>) tokens for a fallback; add a chat_template.jinja to the model folder");

    /// <summary>The rendered conversation; with <paramref name="addGenerationPrompt"/> it ends with an open assistant turn.</summary>
    public string Render(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt) => RenderWithSpans(messages, addGenerationPrompt).Text;

    public RenderedChat RenderWithSpans(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt)
    {
        var values = messages.Select(m => (object?)new Dictionary<string, object?> { ["role"] = m.Role, ["content"] = m.Content }).ToList();
        return RenderValues(values, addGenerationPrompt, null, null);
    }

    /// <summary>
    /// Renders messages given as JSON (so they may carry <c>tool_calls</c>, <c>name</c>, ...), with optional
    /// <paramref name="tools"/> (JSON schemas) and <paramref name="extra"/> variables (e.g. <c>enable_thinking</c>).
    /// </summary>
    public RenderedChat Render(JsonArray messages, bool addGenerationPrompt, JsonArray? tools = null, JsonObject? extra = null) =>
        RenderValues((List<object?>)JinjaTemplate.FromJson(messages)!, addGenerationPrompt,
            tools is null ? null : JinjaTemplate.FromJson(tools), extra is null ? null : (Dictionary<string, object?>)JinjaTemplate.FromJson(extra)!);

    RenderedChat RenderValues(List<object?> messages, bool addGenerationPrompt, object? tools, Dictionary<string, object?>? extra)
    {
        // transformers: messages, tools and documents (None when not given, so defined), add_generation_prompt,
        // the special tokens, then the caller's kwargs.
        var context = new Dictionary<string, object?>(StringComparer.Ordinal)
        {
            ["messages"] = messages,
            ["tools"] = tools,
            ["documents"] = null,
            ["add_generation_prompt"] = addGenerationPrompt,
            ["strftime_now"] = Builtins.StrftimeNow(Now),
        };
        foreach (var (key, value) in specialTokens) context[key] = value;
        foreach (var (key, value) in extra ?? []) context[key] = value;
        string text;
        List<(int Start, int End)> generation;
        try
        {
            (text, generation) = template.Render(context);
        }
        catch (TemplateException e)
        {
            throw new TemplateException($"{Name}: {e.Message}"); // raise_exception's message, or what the interpreter could not do
        }
        if (template.HasGenerationMarkers)
            return new RenderedChat(text, [.. generation.Where(s => s.End > s.Start).Select(s => new TokenSpan(s.Start, s.End))], true);
        return new RenderedChat(text, LocateAssistantReplies(text, messages), false);
    }

    /// <summary>
    /// Without generation markers: find each message's content in the text, in order (as written, trimmed, or the
    /// answer after a reasoning block), and take each assistant reply plus the end-of-turn marker that follows it.
    /// </summary>
    List<TokenSpan> LocateAssistantReplies(string text, List<object?> messages)
    {
        var spans = new List<TokenSpan>();
        int cursor = 0;
        for (int i = 0; i < messages.Count; i++)
        {
            if (messages[i] is not Dictionary<string, object?> m || m.GetValueOrDefault("content") is not string content) continue;
            bool assistant = m.GetValueOrDefault("role") as string == "assistant";
            var found = Find(text, content, cursor);
            if (found is not { } span)
            {
                if (assistant && content.Trim().Length > 0)
                    throw new InvalidOperationException(
                        $"{Name}: assistant message {i} does not appear in the rendered chat (the template rewrites it), so its tokens "
                        + "cannot be found for the loss mask; add {% generation %} markers to the template or train on all tokens");
                continue;
            }
            cursor = span.End;
            if (!assistant || span.Length == 0) continue;
            int end = span.End;
            var marker = EndOfTurnMarkers.Prepend(specialTokens.GetValueOrDefault("eos_token") ?? "")
                .FirstOrDefault(t => t.Length > 0 && string.CompareOrdinal(text, end, t, 0, t.Length) == 0);
            spans.Add(new TokenSpan(span.Start, end + (marker?.Length ?? 0)));
            cursor = spans[^1].End;
        }
        return spans;
    }

    static TokenSpan? Find(string text, string content, int from)
    {
        var answer = content.Contains("</think>", StringComparison.Ordinal) ? content[(content.LastIndexOf("</think>", StringComparison.Ordinal) + 8)..].Trim() : null;
        foreach (var candidate in new[] { content, content.Trim(), answer })
        {
            if (string.IsNullOrEmpty(candidate)) continue;
            int at = text.IndexOf(candidate, from, StringComparison.Ordinal);
            if (at >= 0) return new TokenSpan(at, at + candidate.Length);
        }
        return null;
    }

    /// <summary>
    /// Renders and tokenizes a conversation for training, as <c>apply_chat_template(tokenize=True)</c> does
    /// (no extra special tokens: the template has them), with a mask of the tokens of assistant turns.
    /// </summary>
    public ChatEncoding Encode(HfTokenizer tokenizer, IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt = false)
    {
        var rendered = RenderWithSpans(messages, addGenerationPrompt);
        var encoded = tokenizer.EncodeWithOffsets(rendered.Text, addSpecialTokens: false);
        var assistant = rendered.AssistantSpans;
        var mask = encoded.Offsets.Select(o => assistant.Any(a => o.Overlaps(a))).ToArray();
        return new ChatEncoding(encoded.Ids, mask);
    }
}
