using System.Text.Json;
using System.Text.Json.Nodes;

namespace PeftSharp.Tokenization.Jinja;

/// <summary>
/// A parsed Jinja template, rendered with the environment transformers uses for chat templates
/// (<c>trim_blocks</c>, <c>lstrip_blocks</c>, loop controls, <c>{% generation %}</c>, <c>raise_exception</c>,
/// <c>strftime_now</c>, and a <c>tojson</c> that keeps non-ASCII text).
/// </summary>
internal sealed class JinjaTemplate
{
    readonly List<Node> body;

    JinjaTemplate(List<Node> body, bool hasGeneration)
    {
        this.body = body;
        HasGenerationMarkers = hasGeneration;
    }

    /// <exception cref="TemplateException">the source uses a construct the interpreter does not know; the message names it and its line.</exception>
    public static JinjaTemplate Parse(string source)
    {
        var body = Parser.Parse(source);
        return new JinjaTemplate(body, ContainsGeneration(body));
    }

    /// <summary>Whether the template marks assistant text with <c>{% generation %}</c>.</summary>
    public bool HasGenerationMarkers { get; }

    /// <summary>The rendered text and the character spans written inside <c>{% generation %}</c> blocks.</summary>
    public (string Text, List<(int Start, int End)> GenerationSpans) Render(IReadOnlyDictionary<string, object?> context) =>
        new Evaluator(context).Render(body);

    static bool ContainsGeneration(IEnumerable<Node> nodes) => nodes.Any(n => n switch
    {
        GenerationNode => true,
        IfNode i => ContainsGeneration(i.Body) || ContainsGeneration(i.Else),
        ForNode f => ContainsGeneration(f.Body) || ContainsGeneration(f.Else),
        MacroNode m => ContainsGeneration(m.Body),
        SetNode { Body: { } b } => ContainsGeneration(b),
        FilterBlockNode fb => ContainsGeneration(fb.Body),
        _ => false,
    });

    /// <summary>A JSON value as a template value: objects become insertion-ordered dicts, arrays lists.</summary>
    public static object? FromJson(JsonNode? node) => node switch
    {
        null => null,
        JsonObject o => o.ToDictionary(kv => kv.Key, kv => FromJson(kv.Value), StringComparer.Ordinal),
        JsonArray a => a.Select(FromJson).ToList(),
        JsonValue v => v.GetValueKind() switch
        {
            JsonValueKind.String => v.GetValue<string>(),
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            JsonValueKind.Number => v.TryGetValue<long>(out var l) ? (object)l : v.GetValue<double>(),
            _ => null,
        },
        _ => null,
    };
}
