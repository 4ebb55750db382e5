namespace PeftSharp.Data;

/// <summary>
/// A chat rendered by a chat template: the text to tokenise and the character spans to train on
/// (the assistant turns, including the end-of-turn marker the template writes after each).
/// </summary>
public sealed record RenderedChat(string Text, IReadOnlyList<(int Start, int Length)> TrainSpans);

/// <summary>Renders <c>messages</c> with the tokenizer's chat template; throws a clear error for an unsupported template.</summary>
public delegate RenderedChat ChatRenderer(IReadOnlyList<ChatMessage> messages);

/// <summary>
/// What tokenising needs from a tokenizer, as plain delegates so data code does not depend on a tokenizer class.
/// <paramref name="Encode"/> turns text into ids without special tokens (for BERT-style classification pass an
/// encoder that adds [CLS]/[SEP] and leave <paramref name="BosId"/>/<paramref name="EosId"/> null).
/// <see cref="BosId"/>, when set, starts every text and prompt/completion example; <see cref="EosId"/>, when set, ends it,
/// so a model learns where a document stops. Chats get neither: their template writes its own markers.
/// </summary>
public sealed record TokenizerFunctions(Func<string, int[]> Encode, int? BosId, int? EosId, int PadId, ChatRenderer? RenderChat = null)
{
    /// <summary>Why there is no tokenizer (token-id records only), or null when there is one.</summary>
    public string? Unavailable { get; init; }

    /// <summary>For token-id data and a model without a tokenizer: only <paramref name="padId"/> is needed.</summary>
    public static TokenizerFunctions None(int padId, string why) =>
        new(_ => throw new InvalidOperationException(why), null, null, padId) { Unavailable = why };
}

/// <summary>
/// A tokenised training row. <see cref="Labels"/> line up with <see cref="InputIds"/> (the model shifts them, as
/// transformers does); -100 marks a token that is not trained on. <see cref="PositionIds"/> and
/// <see cref="SegmentIds"/> are set only on packed rows; <see cref="TaskId"/> only for records that name their task.
/// </summary>
public sealed record Row(int[] InputIds, int[] Labels, int[]? PositionIds = null, int[]? SegmentIds = null, long? ClassLabel = null, long? TaskId = null);

/// <summary>Turns <see cref="Example"/>s into <see cref="Row"/>s: tokenise, mask what is not trained on, truncate.</summary>
public static class ExampleTokenizer
{
    /// <summary>The label transformers and PyTorch's cross-entropy ignore.</summary>
    public const int Ignore = -100;

    /// <summary>
    /// Tokenises one example. Rows longer than <paramref name="maxLength"/> keep their first tokens.
    /// <paramref name="completionOnlyLoss"/> masks prompts; <paramref name="assistantOnlyLoss"/> masks non-assistant chat turns.
    /// </summary>
    public static Row Tokenize(Example e, TokenizerFunctions tok, int maxLength, bool completionOnlyLoss = true,
        bool assistantOnlyLoss = true, long? classLabel = null)
    {
        var (ids, labels) = e.Kind switch
        {
            ExampleKind.Text => Whole(WithSpecials(tok, tok.Encode(e.Text!))),
            ExampleKind.PromptCompletion => PromptCompletion(e, tok, completionOnlyLoss),
            ExampleKind.Messages => Chat(e, tok, assistantOnlyLoss),
            _ => (e.InputIds!, e.Labels ?? e.InputIds!),
        };
        if (ids.Length > maxLength)
        {
            ids = ids[..maxLength];
            labels = labels[..maxLength];
        }
        return new Row(ids, labels, ClassLabel: classLabel, TaskId: e.TaskId);
    }

    static (int[], int[]) Whole(int[] ids) => (ids, ids);

    static int[] WithSpecials(TokenizerFunctions tok, int[] body)
    {
        if (tok.BosId is null && tok.EosId is null) return body;
        var list = new List<int>(body.Length + 2);
        if (tok.BosId is { } bos) list.Add(bos);
        list.AddRange(body);
        if (tok.EosId is { } eos) list.Add(eos);
        return list.ToArray();
    }

    static (int[], int[]) PromptCompletion(Example e, TokenizerFunctions tok, bool completionOnly)
    {
        // Prompt and completion are encoded separately so the boundary is exact in token space.
        var prompt = tok.Encode(e.Prompt!);
        var completion = tok.Encode(e.Completion!);
        var ids = new List<int>(prompt.Length + completion.Length + 2);
        var labels = new List<int>(ids.Capacity);
        if (tok.BosId is { } bos) { ids.Add(bos); labels.Add(completionOnly ? Ignore : bos); }
        ids.AddRange(prompt);
        labels.AddRange(completionOnly ? Enumerable.Repeat(Ignore, prompt.Length) : prompt);
        ids.AddRange(completion);
        labels.AddRange(completion);
        if (tok.EosId is { } eos) { ids.Add(eos); labels.Add(eos); }
        return (ids.ToArray(), labels.ToArray());
    }

    static (int[], int[]) Chat(Example e, TokenizerFunctions tok, bool assistantOnly)
    {
        if (tok.RenderChat is null)
            throw new DataFormatException(e.Source,
                "is a chat ('messages') but this tokenizer has no chat template (no chat_template in tokenizer_config.json or " +
                "chat_template.jinja, and no ChatML or Llama-3 tokens for a fallback); add one, or use 'prompt' + 'completion' records");
        RenderedChat chat;
        try
        {
            chat = tok.RenderChat(e.Messages!);
        }
        catch (Exception x) when (x is Tokenization.Jinja.TemplateException or InvalidOperationException)
        {
            throw new DataFormatException(e.Source, $"cannot render this chat: {x.Message}");
        }
        // Encode the text piece by piece at span edges, so every token is wholly inside or outside a trained span.
        var ids = new List<int>();
        var labels = new List<int>();
        var at = 0;
        foreach (var (start, length) in chat.TrainSpans.OrderBy(s => s.Start))
        {
            if (start < at || start + length > chat.Text.Length)
                throw new InvalidOperationException($"chat template returned overlapping or out-of-range spans ({start}, {length})");
            Append(chat.Text[at..start], train: !assistantOnly);
            Append(chat.Text.Substring(start, length), train: true);
            at = start + length;
        }
        Append(chat.Text[at..], train: !assistantOnly);
        return (ids.ToArray(), labels.ToArray());

        void Append(string text, bool train)
        {
            if (text.Length == 0) return;
            var piece = tok.Encode(text);
            ids.AddRange(piece);
            labels.AddRange(train ? piece : Enumerable.Repeat(Ignore, piece.Length));
        }
    }

    /// <summary>Whether a causal-LM row has anything to learn: a label after the first position (the model shifts by one).</summary>
    public static bool HasTrainableTokens(Row row) => row.Labels.Skip(1).Any(l => l != Ignore);
}
