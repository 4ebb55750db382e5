using System.Text.Json;
using System.Text.Json.Serialization;

namespace PeftSharp.Tuners;

/// <summary>
/// PEFT's <c>target_modules</c>: a list of names (exact path or suffix) or one regex string (full match).
/// Kept as given, so a config written back is the config read.
/// </summary>
[JsonConverter(typeof(ModuleSelectorConverter))]
[System.Runtime.CompilerServices.CollectionBuilder(typeof(ModuleSelector), nameof(Create))]
public sealed record ModuleSelector : IEnumerable<string>
{
    public string? Regex { get; init; }
    public IReadOnlyList<string> Names { get; init; } = [];

    public static ModuleSelector Of(params string[] names) => new() { Names = names };
    public static ModuleSelector Pattern(string regex) => new() { Regex = regex };
    public static implicit operator ModuleSelector(string[] names) => Of(names);
    public static ModuleSelector Create(ReadOnlySpan<string> names) => Of(names.ToArray());

    public IEnumerator<string> GetEnumerator() => Names.GetEnumerator();
    System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();

    public override string ToString() => Regex ?? "[" + string.Join(", ", Names) + "]";
}

internal sealed class ModuleSelectorConverter : JsonConverter<ModuleSelector>
{
    public override ModuleSelector? Read(ref Utf8JsonReader r, Type t, JsonSerializerOptions o) => r.TokenType switch
    {
        JsonTokenType.Null => null,
        JsonTokenType.String => ModuleSelector.Pattern(r.GetString()!),
        JsonTokenType.StartArray => ModuleSelector.Of(JsonSerializer.Deserialize<string[]>(ref r, o)!),
        _ => throw new JsonException("expected a string (regex) or a list of module names"),
    };

    public override void Write(Utf8JsonWriter w, ModuleSelector v, JsonSerializerOptions o)
    {
        if (v.Regex is not null) w.WriteStringValue(v.Regex);
        else JsonSerializer.Serialize(w, v.Names.ToArray(), o);
    }
}

/// <summary>An int or a list of ints (PEFT's <c>layers_to_transform</c>).</summary>
internal sealed class IntOrListConverter : JsonConverter<int[]>
{
    public override int[]? Read(ref Utf8JsonReader r, Type t, JsonSerializerOptions o) => r.TokenType switch
    {
        JsonTokenType.Null => null,
        JsonTokenType.Number => [r.GetInt32()],
        JsonTokenType.StartArray => JsonSerializer.Deserialize<int[]>(ref r),
        _ => throw new JsonException("expected an integer or a list of integers"),
    };

    public override void Write(Utf8JsonWriter w, int[] v, JsonSerializerOptions o) => JsonSerializer.Serialize(w, v);
}

/// <summary>A string or a list of strings (PEFT's <c>layers_pattern</c>).</summary>
internal sealed class StringOrListConverter : JsonConverter<string[]>
{
    public override string[]? Read(ref Utf8JsonReader r, Type t, JsonSerializerOptions o) => r.TokenType switch
    {
        JsonTokenType.Null => null,
        JsonTokenType.String => [r.GetString()!],
        JsonTokenType.StartArray => JsonSerializer.Deserialize<string[]>(ref r),
        _ => throw new JsonException("expected a string or a list of strings"),
    };

    public override void Write(Utf8JsonWriter w, string[] v, JsonSerializerOptions o) => JsonSerializer.Serialize(w, v);
}

/// <summary>A bool or a string (PEFT's <c>init_lora_weights</c>: true, false, "gaussian", "pissa", ...), held as a string.</summary>
internal sealed class BoolOrStringConverter : JsonConverter<string>
{
    public override string? Read(ref Utf8JsonReader r, Type t, JsonSerializerOptions o) => r.TokenType switch
    {
        JsonTokenType.True => "true",
        JsonTokenType.False => "false",
        JsonTokenType.String => r.GetString(),
        JsonTokenType.Null => null,
        _ => throw new JsonException("expected true, false or a string"),
    };

    public override void Write(Utf8JsonWriter w, string v, JsonSerializerOptions o)
    {
        if (v == "true") w.WriteBooleanValue(true);
        else if (v == "false") w.WriteBooleanValue(false);
        else w.WriteStringValue(v);
    }
}
