using System.Globalization;
using System.Reflection;
using System.Text;
using System.Text.Json;
using YamlDotNet.Serialization;

namespace PeftSharp.Training;

/// <summary>
/// Reads <see cref="TrainingOptions"/> from YAML or JSON and applies command-line overrides. Keys may be snake_case
/// (<c>learning_rate</c>) or kebab-case (<c>learning-rate</c>, <c>--learning-rate</c>); a few short aliases are
/// accepted (<c>batch_size</c>, <c>num_epochs</c>, <c>lr_scheduler</c>, <c>resume</c>, <c>no_shuffle</c>).
/// </summary>
public static class TrainingOptionsFile
{
    static readonly Dictionary<string, PropertyInfo> Properties = typeof(TrainingOptions)
        .GetProperties(BindingFlags.Public | BindingFlags.Instance)
        .Where(p => p.CanWrite)
        .ToDictionary(p => SnakeCase(p.Name));

    static readonly Dictionary<string, string> Aliases = new()
    {
        ["batch_size"] = "per_device_train_batch_size",
        ["eval_batch_size"] = "per_device_eval_batch_size",
        ["num_epochs"] = "num_train_epochs",
        ["epochs"] = "num_train_epochs",
        ["lr_scheduler"] = "lr_scheduler_type",
        ["lr"] = "learning_rate",
        ["model_name_or_path"] = "model",
        ["max_seq_length"] = "max_length",
        ["target_modules"] = "lora_target_modules",
        ["validation_file"] = "eval_file",
        ["resume"] = "resume_from_checkpoint",
    };

    /// <summary>Every accepted key in snake_case (aliases and <c>no_shuffle</c> excluded).</summary>
    public static IReadOnlyCollection<string> Keys => Properties.Keys;

    /// <summary>Loads a .yaml/.yml or .json file on top of <paramref name="defaults"/> (or the built-in defaults).</summary>
    public static TrainingOptions Load(string path, TrainingOptions? defaults = null)
    {
        var text = File.ReadAllText(path);
        IEnumerable<KeyValuePair<string, object?>> entries;
        try
        {
            entries = Path.GetExtension(path).ToLowerInvariant() is ".json" ? FromJson(text) : FromYaml(text);
        }
        catch (Exception e) when (e is JsonException or YamlDotNet.Core.YamlException or InvalidCastException)
        {
            throw new FormatException($"{path}: cannot read the config ({e.Message})", e);
        }
        try { return Apply(defaults ?? new TrainingOptions(), entries); }
        catch (ArgumentException e) { throw new ArgumentException($"{path}: {e.Message}", e); }
    }

    /// <summary>Applies key/value pairs in order (later wins). A value may be a string, number, bool or a list of strings.</summary>
    public static TrainingOptions Apply(TrainingOptions options, IEnumerable<KeyValuePair<string, object?>> entries)
    {
        var copy = options with { };
        foreach (var (key, value) in entries) Set(copy, key, value, bareFlag: false);
        return copy;
    }

    /// <summary>
    /// One override, as the command line gives it: <c>("--learning-rate", "1e-4")</c>; a bare flag has a null value
    /// (<c>--packing</c> is true, <c>--resume</c> is "latest"). Whatever key is given, by any of its names, is taken as
    /// typed: it wins over defaults and the config file.
    /// </summary>
    public static TrainingOptions With(this TrainingOptions options, string key, string? value)
    {
        var copy = options with { };
        Set(copy, key, value, bareFlag: value is null);
        return copy;
    }

    static void Set(TrainingOptions target, string rawKey, object? value, bool bareFlag)
    {
        var key = Normalize(rawKey);
        if (key == "no_shuffle")
        {
            Properties["shuffle"].SetValue(target, !ParseBool(value, key));
            return;
        }
        key = Aliases.GetValueOrDefault(key, key);
        if (!Properties.TryGetValue(key, out var p))
            throw new ArgumentException($"unknown option '{rawKey}'{Suggest(key)}");
        if (key == "resume_from_checkpoint")
        {
            // A bare --resume (or --resume-from-checkpoint) means the newest checkpoint, as the help says; in a config
            // file a null value means no resume, as transformers reads None.
            if (bareFlag || value is "" || value is true || value is string t && t.Equals("true", StringComparison.OrdinalIgnoreCase)) value = "latest";
            else if (value is false || value is string f && f.Equals("false", StringComparison.OrdinalIgnoreCase)) value = null;
        }
        p.SetValue(target, Convert(value, p.PropertyType, key));
        target.Given = target.Given.Add(key);
    }

    static object? Convert(object? value, Type type, string key)
    {
        var underlying = Nullable.GetUnderlyingType(type) ?? type;
        if (value is null && type != typeof(bool)) return type.IsValueType && underlying == type ? throw Bad(key, "null", "a value") : null;
        if (type == typeof(string[]))
            return value switch
            {
                IEnumerable<object?> list => list.Select(v => v?.ToString() ?? "").ToArray(),
                _ => value!.ToString()!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
            };
        if (underlying == typeof(bool)) return ParseBool(value, key);
        var s = System.Convert.ToString(value, CultureInfo.InvariantCulture)!;
        if (underlying == typeof(string)) return s;
        if (underlying == typeof(int))
            return int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out var i) ? i : throw Bad(key, s, "a whole number");
        if (underlying == typeof(long))
            return long.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out var l) ? l : throw Bad(key, s, "a whole number");
        if (underlying == typeof(double))
            return double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var d) ? d : throw Bad(key, s, "a number");
        throw new NotSupportedException($"option {key} has type {type.Name}");
    }

    static bool ParseBool(object? value, string key) => value switch
    {
        null => true, // a bare flag: --packing
        bool b => b,
        _ => System.Convert.ToString(value, CultureInfo.InvariantCulture)!.ToLowerInvariant() switch
        {
            "" or "true" or "1" or "yes" or "on" => true,
            "false" or "0" or "no" or "off" => false,
            var s => throw Bad(key, s, "true or false"),
        },
    };

    static ArgumentException Bad(string key, string value, string what) => new($"option {key}: '{value}' is not {what}");

    static string Normalize(string key) => key.TrimStart('-').Trim().Replace('-', '_').ToLowerInvariant();

    static string SnakeCase(string pascal)
    {
        var sb = new StringBuilder();
        for (var i = 0; i < pascal.Length; i++)
        {
            var c = pascal[i];
            if (char.IsUpper(c) && i > 0 && !char.IsDigit(pascal[i - 1])) sb.Append('_');
            sb.Append(char.ToLowerInvariant(c));
        }
        return sb.ToString();
    }

    static string Suggest(string key)
    {
        var best = Properties.Keys.Concat(Aliases.Keys).MinBy(k => Distance(k, key));
        return best is not null && Distance(best, key) <= Math.Max(2, key.Length / 3) ? $"; did you mean '{best}'?" : "";
    }

    static int Distance(string a, string b)
    {
        var d = new int[b.Length + 1];
        for (var j = 0; j <= b.Length; j++) d[j] = j;
        for (var i = 1; i <= a.Length; i++)
        {
            var prev = d[0];
            d[0] = i;
            for (var j = 1; j <= b.Length; j++)
            {
                var tmp = d[j];
                d[j] = Math.Min(Math.Min(d[j] + 1, d[j - 1] + 1), prev + (a[i - 1] == b[j - 1] ? 0 : 1));
                prev = tmp;
            }
        }
        return d[b.Length];
    }

    static IEnumerable<KeyValuePair<string, object?>> FromYaml(string text)
    {
        var map = new DeserializerBuilder().Build().Deserialize<Dictionary<string, object?>>(text) ?? [];
        return map.Select(kv => new KeyValuePair<string, object?>(kv.Key, kv.Value is List<object> list ? list.Cast<object?>().ToList() : kv.Value));
    }

    static IEnumerable<KeyValuePair<string, object?>> FromJson(string text)
    {
        using var doc = JsonDocument.Parse(text, new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true });
        if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new JsonException("the config must be a JSON object");
        return doc.RootElement.EnumerateObject().Select(p => new KeyValuePair<string, object?>(p.Name, p.Value.ValueKind switch
        {
            JsonValueKind.Array => p.Value.EnumerateArray().Select(v => (object?)v.ToString()).ToList(),
            JsonValueKind.Null => null,
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => p.Value.ToString(),
        })).ToList();
    }

    /// <summary>The options as a JSON object with snake_case keys, written beside a run so it can be repeated.</summary>
    public static string ToJson(TrainingOptions options)
    {
        var dict = Properties.OrderBy(kv => kv.Key, StringComparer.Ordinal).ToDictionary(kv => kv.Key, kv => kv.Value.GetValue(options));
        return JsonSerializer.Serialize(dict, new JsonSerializerOptions { WriteIndented = true });
    }
}
