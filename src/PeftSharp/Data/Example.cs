using System.Globalization;
using System.Text.Json;

namespace PeftSharp.Data;

/// <summary>The record shapes a dataset may use, chosen per record by the fields it has.</summary>
public enum ExampleKind
{
    /// <summary><c>text</c>: plain text; every token is trained on.</summary>
    Text,
    /// <summary><c>prompt</c> + <c>completion</c>: by default only the completion is trained on.</summary>
    PromptCompletion,
    /// <summary><c>messages</c>: a chat, rendered with the tokenizer's chat template; by default only assistant turns are trained on.</summary>
    Messages,
    /// <summary><c>input_ids</c> (and optionally <c>labels</c>): already tokenised.</summary>
    InputIds,
}

/// <summary>One chat turn, as in the <c>messages</c> field of a chat dataset.</summary>
public sealed record ChatMessage(string Role, string Content);

/// <summary>
/// A record whose shape is known. Exactly the fields of its <see cref="Kind"/> are set; <see cref="LabelName"/> or
/// <see cref="LabelId"/> is set when the record has a classification label.
/// </summary>
public sealed record Example(ExampleKind Kind, SourceRef Source)
{
    public string? Text { get; init; }
    public string? Prompt { get; init; }
    public string? Completion { get; init; }
    public IReadOnlyList<ChatMessage>? Messages { get; init; }
    public int[]? InputIds { get; init; }
    public int[]? Labels { get; init; }
    public long? LabelId { get; init; }
    public string? LabelName { get; init; }
    /// <summary>The record's <c>task_id</c> (a non-negative integer), for methods that route by task (Poly).</summary>
    public long? TaskId { get; init; }
}

/// <summary>Decides a record's shape from its fields and checks their types.</summary>
public static class ExampleParser
{
    /// <summary>
    /// Parses one record. <paramref name="textField"/> renames the text field (TRL's <c>dataset_text_field</c>);
    /// <paramref name="labelField"/>, when set, makes a label required (sequence classification).
    /// </summary>
    /// <exception cref="DataFormatException">the record has no known shape or a field has the wrong type.</exception>
    public static Example Parse(RawRecord record, string textField = "text", string? labelField = null)
    {
        var where = record.Source;
        if (record.Fields is not { } f) throw new DataFormatException(where, record.Error ?? "unreadable record");
        Example e;
        if (f.ContainsKey("messages")) e = new Example(ExampleKind.Messages, where) { Messages = Messages(f["messages"], where) };
        else if (f.ContainsKey("prompt") || f.ContainsKey("completion"))
        {
            if (!f.ContainsKey("prompt")) throw new DataFormatException(where, "has 'completion' but no 'prompt'");
            if (!f.ContainsKey("completion")) throw new DataFormatException(where, "has 'prompt' but no 'completion'");
            e = new Example(ExampleKind.PromptCompletion, where) { Prompt = Str(f, "prompt", where), Completion = Str(f, "completion", where) };
        }
        else if (f.ContainsKey("input_ids"))
            e = new Example(ExampleKind.InputIds, where)
            {
                InputIds = Ints(f["input_ids"], "input_ids", where),
                Labels = labelField is null && f.TryGetValue("labels", out var l) && l is not null ? Ints(l, "labels", where) : null,
            };
        else if (f.ContainsKey(textField)) e = new Example(ExampleKind.Text, where) { Text = Str(f, textField, where) };
        else
            throw new DataFormatException(where,
                $"has fields [{string.Join(", ", f.Keys.Select(k => $"'{k}'"))}] but a record needs '{textField}', 'prompt' + 'completion', 'messages' or 'input_ids'");

        if (e.Kind == ExampleKind.InputIds && e.Labels is not null && e.Labels.Length != e.InputIds!.Length)
            throw new DataFormatException(where, $"'labels' has {e.Labels.Length} ids but 'input_ids' has {e.InputIds.Length}");
        if (f.TryGetValue("task_id", out var task) && task is not null) e = e with { TaskId = TaskId(task, where) };
        if (labelField is null) return e;
        if (!f.TryGetValue(labelField, out var label) || label is null)
            throw new DataFormatException(where, $"has no '{labelField}' field, which sequence classification needs");
        return label switch
        {
            long id => e with { LabelId = id },
            double d when d == Math.Floor(d) => e with { LabelId = (long)d },
            string s when long.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out var id) => e with { LabelId = id },
            string s when s.Length > 0 => e with { LabelName = s },
            _ => throw new DataFormatException(where, $"'{labelField}' must be a class index or a class name, not {Describe(label)}"),
        };
    }

    static long TaskId(object value, SourceRef where) => value switch
    {
        long id and >= 0 => id,
        double d when d >= 0 && d == Math.Floor(d) => (long)d,
        string s when long.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out var id) && id >= 0 => id,
        _ => throw new DataFormatException(where, $"'task_id' must be a non-negative integer, not {Describe(value)}"),
    };

    static string Str(IReadOnlyDictionary<string, object?> f, string name, SourceRef where) =>
        f[name] as string ?? throw new DataFormatException(where, $"'{name}' must be a string, not {Describe(f[name])}");

    static IReadOnlyList<ChatMessage> Messages(object? value, SourceRef where)
    {
        // CSV cells carry nested data as a JSON string.
        if (value is string s) value = ParseJsonCell(s, "messages", where);
        if (value is not IReadOnlyList<object?> list || list.Count == 0)
            throw new DataFormatException(where, "'messages' must be a non-empty list of {\"role\", \"content\"} objects");
        var messages = new List<ChatMessage>(list.Count);
        for (var i = 0; i < list.Count; i++)
        {
            if (list[i] is not IReadOnlyDictionary<string, object?> m || m.GetValueOrDefault("role") is not string role || m.GetValueOrDefault("content") is not string content)
                throw new DataFormatException(where, $"messages[{i}] must be an object with string 'role' and 'content'");
            messages.Add(new ChatMessage(role, content));
        }
        return messages;
    }

    static int[] Ints(object? value, string name, SourceRef where)
    {
        if (value is string s)
        {
            s = s.Trim();
            // A CSV cell holds "[1, 2, 3]" or "1 2 3".
            value = s.StartsWith('[') ? ParseJsonCell(s, name, where)
                : s.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries).Select(x => (object?)x).ToList();
        }
        if (value is not IReadOnlyList<object?> list)
            throw new DataFormatException(where, $"'{name}' must be a list of token ids, not {Describe(value)}");
        var ids = new int[list.Count];
        for (var i = 0; i < ids.Length; i++)
        {
            ids[i] = list[i] switch
            {
                long l when l is >= int.MinValue and <= int.MaxValue => (int)l,
                string t when int.TryParse(t, NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) => v,
                var other => throw new DataFormatException(where, $"{name}[{i}] is {Describe(other)}, not a token id"),
            };
        }
        return ids;
    }

    static object? ParseJsonCell(string s, string name, SourceRef where)
    {
        try
        {
            using var doc = JsonDocument.Parse(s);
            return DataReader.FromJson(doc.RootElement);
        }
        catch (JsonException e)
        {
            throw new DataFormatException(where, $"'{name}' is not valid JSON ({Jsonl.FirstSentence(e.Message)})");
        }
        catch (InvalidOperationException)
        {
            throw new DataFormatException(where, $"'{name}' {DataReader.NotUnicode}");
        }
    }

    static string Describe(object? v) => v switch
    {
        null => "null",
        string s => $"the string \"{(s.Length > 20 ? s[..20] + "..." : s)}\"",
        long or double => $"the number {Convert.ToString(v, CultureInfo.InvariantCulture)}",
        bool b => b ? "true" : "false",
        IReadOnlyList<object?> => "a list",
        _ => "an object",
    };
}
