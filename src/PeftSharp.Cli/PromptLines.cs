using System.Text.Json;

namespace PeftSharp.Cli;

/// <summary><c>generate --prompts</c>: one JSON object per line, <c>{"prompt": "...", "adapter": "a"}</c> (adapter optional).</summary>
internal static class PromptLines
{
    public sealed record Line(string Prompt, string? Adapter);

    public static List<Line> Read(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"--prompts: {path} does not exist");
        var lines = new List<Line>();
        int number = 0;
        foreach (var text in File.ReadLines(path))
        {
            number++;
            if (string.IsNullOrWhiteSpace(text)) continue;
            JsonElement e;
            try { e = JsonDocument.Parse(text).RootElement; }
            catch (JsonException) { throw new InvalidDataException($"{path}:{number}: not a JSON object; each line must be {{\"prompt\": \"...\", \"adapter\": \"a\"}}"); }
            if (e.ValueKind != JsonValueKind.Object || !e.TryGetProperty("prompt", out var p) || p.ValueKind != JsonValueKind.String)
                throw new InvalidDataException($"{path}:{number}: needs a string \"prompt\"");
            string? adapter = null;
            if (e.TryGetProperty("adapter", out var a) && a.ValueKind != JsonValueKind.Null)
                adapter = a.ValueKind == JsonValueKind.String ? a.GetString() : throw new InvalidDataException($"{path}:{number}: \"adapter\" must be a string (an --adapter name, or base)");
            lines.Add(new Line(p.GetString()!, adapter));
        }
        if (lines.Count == 0) throw new InvalidDataException($"{path}: no prompts; write one JSON object per line");
        return lines;
    }
}
