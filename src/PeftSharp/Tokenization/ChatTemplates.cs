using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace PeftSharp.Tokenization;

/// <summary>One turn of a conversation; <see cref="Role"/> is "system", "user", "assistant" (or "tool").</summary>
public sealed record ChatMessage(string Role, string Content);

/// <summary>The conversation formats we can render without a Jinja engine.</summary>
public enum ChatFormat
{
    /// <summary><c>&lt;|im_start|&gt;role\ncontent&lt;|im_end|&gt;\n</c> (Qwen2, SmolLM2, many fine-tunes).</summary>
    ChatML,

    /// <summary>
    /// <c>&lt;|start_header_id|&gt;role&lt;|end_header_id|&gt;\n\ncontent&lt;|eot_id|&gt;</c> after <c>&lt;|begin_of_text|&gt;</c>.
    /// </summary>
    Llama3,
}

/// <summary>Where message <see cref="MessageIndex"/> landed in the rendered text: content, then the end-of-turn marker.</summary>
public readonly record struct ChatMessageSpan(int MessageIndex, string Role, int ContentStart, int ContentEnd, int TurnEnd);

/// <summary>A rendered conversation and the span of each message in it.</summary>
public sealed record RenderedChat(string Text, IReadOnlyList<ChatMessageSpan> Messages)
{
    /// <summary>
    /// The text the model should learn to write: each assistant message's content and its end-of-turn marker
    /// (so the model learns to stop). The role header before it is prompt, not target.
    /// </summary>
    public IReadOnlyList<TokenSpan> AssistantSpans =>
        [.. Messages.Where(m => m.Role == "assistant").Select(m => new TokenSpan(m.ContentStart, m.TurnEnd))];
}

/// <summary>Token ids of a rendered conversation, and which of them belong to assistant turns (the loss mask).</summary>
public sealed record ChatEncoding(int[] Ids, bool[] AssistantMask);

/// <summary>
/// A chat template recognised from the Jinja source in tokenizer_config.json by its markers, and rendered
/// in C# to the same string as transformers' <c>apply_chat_template</c> (for messages without tools).
/// </summary>
public sealed record ChatTemplate(ChatFormat Format)
{
    const string Supported = "supported: ChatML (<|im_start|>role\\ncontent<|im_end|>, e.g. Qwen2, SmolLM2) "
        + "and Llama 3 (<|start_header_id|>role<|end_header_id|>\\n\\ncontent<|eot_id|>)";

    /// <summary>Written once before the conversation (Llama 3: the bos token, <c>&lt;|begin_of_text|&gt;</c>).</summary>
    public string Prefix { get; init; } = "";

    /// <summary>ChatML templates such as Qwen2.5's and SmolLM2's insert this system message when the chat has none.</summary>
    public string? DefaultSystemMessage { get; init; }

    /// <summary>
    /// Llama 3.1+ templates always open with a system header stating the knowledge cutoff and this date
    /// ("26 Jul 2024" in 3.1; today's date in 3.2, which calls <c>strftime_now</c>). Null: no such header (Llama 3.0).
    /// </summary>
    public string? TodayDate { get; init; }

    /// <summary>Recognises a template from its Jinja source, or says which templates are supported.</summary>
    public static ChatTemplate Recognise(string? jinja, string? bosToken = null, DateTime? today = null)
    {
        if (string.IsNullOrWhiteSpace(jinja))
            throw new InvalidOperationException($"the tokenizer has no chat_template (tokenizer_config.json or chat_template.jinja); {Supported}");
        if (jinja.Contains("<|im_start|>", StringComparison.Ordinal) && jinja.Contains("<|im_end|>", StringComparison.Ordinal))
        {
            if (jinja.Contains("<think>", StringComparison.Ordinal))
                throw new NotSupportedException($"ChatML templates with reasoning blocks (<think>, e.g. Qwen3) are not supported; {Supported}");
            return new ChatTemplate(ChatFormat.ChatML) { DefaultSystemMessage = DefaultChatMLSystem(jinja) };
        }
        if (jinja.Contains("<|start_header_id|>", StringComparison.Ordinal) && jinja.Contains("<|eot_id|>", StringComparison.Ordinal))
        {
            return new ChatTemplate(ChatFormat.Llama3)
            {
                Prefix = bosToken ?? "<|begin_of_text|>",
                TodayDate = jinja.Contains("Cutting Knowledge Date", StringComparison.Ordinal) ? Llama3Date(jinja, today ?? DateTime.Today) : null,
            };
        }
        var start = jinja.Length > 80 ? jinja[..80] + "..." : jinja;
        throw new NotSupportedException($"chat template not recognised ({Supported}); it begins: {start}");
    }

    /// <summary>The rendered conversation; with <paramref name="addGenerationPrompt"/> it ends with an open assistant header.</summary>
    public string Render(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt) => RenderWithSpans(messages, addGenerationPrompt).Text;

    public RenderedChat RenderWithSpans(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt)
    {
        var text = new StringBuilder(Prefix);
        var spans = new List<ChatMessageSpan>(messages.Count);
        var (header, separator, endOfTurn, between) = Format == ChatFormat.ChatML
            ? ("<|im_start|>", "\n", "<|im_end|>", "\n")
            : ("<|start_header_id|>", "<|end_header_id|>\n\n", "<|eot_id|>", "");
        var first = 0;

        void Turn(int index, string role, string content, string preamble = "")
        {
            text.Append(header).Append(role).Append(separator).Append(preamble);
            var start = text.Length;
            text.Append(content);
            var contentEnd = text.Length;
            text.Append(endOfTurn);
            if (index >= 0) spans.Add(new ChatMessageSpan(index, role, start, contentEnd, text.Length));
            text.Append(between);
        }

        // Llama 3 trims every message (Jinja "| trim"); ChatML keeps content verbatim.
        string Content(ChatMessage m) => Format == ChatFormat.Llama3 ? m.Content.Trim() : m.Content;
        var hasSystem = messages.Count > 0 && messages[0].Role == "system";
        if (TodayDate != null)
        {
            // Llama 3.1+: the system message (or nothing) always goes inside the dated system header.
            Turn(hasSystem ? 0 : -1, "system", hasSystem ? Content(messages[0]) : "",
                $"Cutting Knowledge Date: December 2023\nToday Date: {TodayDate}\n\n");
            first = hasSystem ? 1 : 0;
        }
        else if (!hasSystem && DefaultSystemMessage != null)
        {
            Turn(-1, "system", DefaultSystemMessage);
        }
        for (int i = first; i < messages.Count; i++) Turn(i, messages[i].Role, Content(messages[i]));
        if (addGenerationPrompt) text.Append(header).Append("assistant").Append(separator);
        return new RenderedChat(text.ToString(), spans);
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

    /// <summary>The fixed system message a ChatML template writes when the chat has none, if it has one.</summary>
    static string? DefaultChatMLSystem(string jinja)
    {
        // A literal such as '<|im_start|>system\nYou are Qwen, ...<|im_end|>\n' (no expression inside).
        var m = Regex.Match(jinja, @"<\|im_start\|>system(?:\\n|\n)([^'""{}+]*?)<\|im_end\|>");
        return m.Success ? m.Groups[1].Value.Replace("\\n", "\n", StringComparison.Ordinal) : null;
    }

    static string Llama3Date(string jinja, DateTime today)
    {
        if (jinja.Contains("strftime_now", StringComparison.Ordinal)) return today.ToString("dd MMM yyyy", CultureInfo.InvariantCulture);
        var m = Regex.Match(jinja, @"date_string\s*=\s*[""']([^""']+)[""']");
        return m.Success ? m.Groups[1].Value : "26 Jul 2024";
    }
}
