using System.CommandLine;
using System.Globalization;
using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Cli;

/// <summary>
/// The options several commands share, one name and one parser per concept, and the value parsers every command uses:
/// a value that does not parse is a parse error naming its option, reported before anything loads.
/// </summary>
internal static class Options
{
    public static Option<string> Model(bool required = true) => new Option<string>("--model")
    {
        Description = "Hugging Face model folder (config.json + safetensors)",
        Required = required,
    }.Help(defaultText: required ? null : "the bundled tinycode-3m", value: "<dir>");

    public static Option<string> Adapter() => new Option<string>("--adapter")
    {
        Description = "PEFT adapter folder (adapter_config.json + adapter_model.safetensors) to apply to the model",
    }.Help(value: "<dir>");

    public static Option<string[]> Adapters() => new Option<string[]>("--adapter")
    {
        Description = "PEFT adapter folder (adapter_config.json + adapter_model.safetensors); repeat it to combine several",
        Required = true,
    }.Help(value: "<dir>");

    public static readonly IReadOnlyDictionary<string, ScalarType> DTypes = new Dictionary<string, ScalarType>
    {
        ["float32"] = ScalarType.Float32, ["fp32"] = ScalarType.Float32,
        ["bfloat16"] = ScalarType.BFloat16, ["bf16"] = ScalarType.BFloat16,
        ["float16"] = ScalarType.Float16, ["fp16"] = ScalarType.Float16,
    };

    public static Option<ScalarType> DType(string description = "dtype of the model's weights") =>
        Parsed("--dtype", description, "float32, bfloat16 or float16", (string s, out ScalarType t) => DTypes.TryGetValue(s.ToLowerInvariant(), out t))
            .Default(ScalarType.Float32, "float32", "<float32|bfloat16|float16>");

    /// <summary>The device string is checked when the command runs (whether CUDA is usable is known only then).</summary>
    public static Option<string> Device() => new Option<string>("--device")
    {
        Description = "where the model runs: auto (CUDA when usable, else CPU), cpu, cuda or cuda:N",
        DefaultValueFactory = _ => "auto",
    }.Help(defaultText: "auto", value: "<device>");

    public static Device ParseDevice(string s) => Devices.Parse(s, "--device");

    /// <summary>Shard size of a written checkpoint; <c>--out-shard-size</c> is mergekit's name for it.</summary>
    public static Option<long> MaxShardSize() =>
        Parsed<long>("--max-shard-size", "largest safetensors shard written, in bytes: 2000000, or with a suffix: 500M, 5B (mergekit; powers of 1000), 5GB, 4GiB",
                "a size such as 5B, 500M, 5GB, 4GiB or 2000000", TryParseSize)
            .Must(bytes => bytes >= 1, "a shard must hold at least one byte")
            .Default(5_000_000_000, "5B", "<size>")
            .Alias("--out-shard-size");

    public static Option<long?> Seed(string description) =>
        Parsed("--seed", description, "a whole number", (string s, out long? v) => TryLong(s, out v)).Help(value: "<n>");

    /// <summary>The bundled default model, next to the executable.</summary>
    public static string BundledModel => System.IO.Path.Combine(AppContext.BaseDirectory, "models", "tinycode-3m");

    /// <summary>An output folder must be creatable: not an existing file, not under one.</summary>
    public static void CheckOutputFolder(string option, string folder)
    {
        var full = System.IO.Path.GetFullPath(folder);
        if (File.Exists(full)) throw new ArgumentException($"{option} {folder} is an existing file; give a folder");
        for (var parent = System.IO.Path.GetDirectoryName(full); parent is not null; parent = System.IO.Path.GetDirectoryName(parent))
            if (File.Exists(parent)) throw new ArgumentException($"{option} {folder} lies under {parent}, which is a file, not a folder");
    }

    // ---- parsers

    public delegate bool TryParse<T>(string text, out T value);

    /// <summary>An option whose value this parser reads; what it cannot read is a parse error naming the option.</summary>
    public static Option<T> Parsed<T>(string name, string description, string expected, TryParse<T> parse)
    {
        var option = new Option<T>(name) { Description = description };
        option.CustomParser = result =>
        {
            var text = result.Tokens.Count == 0 ? "" : result.Tokens[^1].Value;
            if (parse(text.Trim(), out var value)) return value;
            result.AddError($"{AsTyped(result, name)} '{text}' is not {expected}");
            return default;
        };
        return option;
    }

    /// <summary>Adds a rule the parsed value must keep; breaking it is a parse error naming the option and the value.</summary>
    public static Option<T> Must<T>(this Option<T> option, Func<T, bool> rule, string what)
    {
        var parse = option.CustomParser ?? throw new InvalidOperationException($"{option.Name} has no parser");
        option.CustomParser = result =>
        {
            var value = parse(result);
            if (value is not null && !rule(value)) result.AddError($"{AsTyped(result, option.Name)} {result.Tokens[^1].Value}: {what}");
            return value;
        };
        return option;
    }

    // The option as the user typed it (an alias such as --out-shard-size, say).
    static string AsTyped(System.CommandLine.Parsing.ArgumentResult result, string name) =>
        (result.Parent as System.CommandLine.Parsing.OptionResult)?.IdentifierToken?.Value ?? name;

    public static Option<T> Default<T>(this Option<T> option, T value, string shown, string? valueName = null)
    {
        option.DefaultValueFactory = _ => value;
        return option.Help(defaultText: shown, value: valueName);
    }

    public static Option<T> Alias<T>(this Option<T> option, string alias)
    {
        option.Aliases.Add(alias);
        return option;
    }

    public static Option<int?> WholeNumber(string name, string description) =>
        Parsed(name, description, "a whole number", (string s, out int? v) =>
        {
            var ok = int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out var i);
            v = ok ? i : null;
            return ok;
        }).Help(value: "<n>");

    public static Option<double?> Number(string name, string description) =>
        Parsed(name, description, "a number", (string s, out double? v) =>
        {
            var ok = double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var d);
            v = ok ? d : null;
            return ok;
        }).Help(value: "<x>");

    /// <summary>Comma-separated numbers, each finite.</summary>
    public static Option<double[]> Numbers(string name, string description) =>
        Parsed(name, description, "a comma-separated list of numbers such as 0.7,0.3", (string s, out double[] v) =>
        {
            var parts = s.Split(',', StringSplitOptions.TrimEntries);
            v = new double[parts.Length];
            for (int i = 0; i < parts.Length; i++)
                if (!double.TryParse(parts[i], NumberStyles.Float, CultureInfo.InvariantCulture, out v[i]) || !double.IsFinite(v[i])) return false;
            return parts.Length > 0;
        }).Help(value: "<x,y,...>");

    /// <summary>Comma-separated token ids: whole numbers, none negative (the vocabulary is checked once the model's config is read).</summary>
    public static Option<int[]> TokenIds(string name, string description) =>
        Parsed(name, description, "a comma-separated list of token ids (whole numbers from 0) such as 1,2,3", (string s, out int[] v) =>
        {
            var parts = s.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
            v = new int[parts.Length];
            for (int i = 0; i < parts.Length; i++)
                if (!int.TryParse(parts[i], NumberStyles.Integer, CultureInfo.InvariantCulture, out v[i]) || v[i] < 0) return false;
            return true;
        }).Help(value: "<id,id,...>");

    /// <summary>Token ids must index the model's embedding table.</summary>
    public static void CheckTokenIds(string what, IEnumerable<long> ids, int vocabSize, string modelDir)
    {
        foreach (var id in ids)
            if (id < 0 || id >= vocabSize)
                throw new ArgumentException($"{what} holds token id {id}, outside the vocabulary of {modelDir} (ids 0 to {vocabSize - 1})");
    }

    static bool TryLong(string s, out long? v)
    {
        var ok = long.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out var l);
        v = ok ? l : null;
        return ok;
    }

    /// <summary>
    /// Sizes as mergekit and transformers write them: plain bytes; K, M, B or G (mergekit: powers of 1000); KB, MB, GB
    /// (powers of 1000); KiB, MiB, GiB (powers of 1024).
    /// </summary>
    public static bool TryParseSize(string text, out long bytes)
    {
        bytes = 0;
        var t = text.Trim();
        var units = new (string Suffix, double Unit)[]
        {
            ("KiB", 1L << 10), ("MiB", 1L << 20), ("GiB", 1L << 30), ("KB", 1e3), ("MB", 1e6), ("GB", 1e9),
            ("K", 1e3), ("M", 1e6), ("B", 1e9), ("G", 1e9),
        };
        double unit = 1;
        foreach (var (suffix, u) in units)
            if (t.EndsWith(suffix, StringComparison.OrdinalIgnoreCase)) { unit = u; t = t[..^suffix.Length]; break; }
        if (!double.TryParse(t, NumberStyles.Float, CultureInfo.InvariantCulture, out var n) || !(n * unit >= 0) || n * unit > long.MaxValue) return false;
        bytes = (long)(n * unit);
        return true;
    }
}
