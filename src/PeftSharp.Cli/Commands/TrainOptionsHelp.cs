using System.Globalization;
using System.Reflection;
using PeftSharp.Training;
using PeftSharp.Training.Layerwise;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// What <c>train --help</c> says about each <see cref="TrainingOptions"/> key: the property's doc comment, its default
/// and its group, all read from the options record itself so that help cannot drift from it.
/// </summary>
internal static class TrainOptionsHelp
{
    /// <summary>Each group starts at this key and runs, in the record's declaration order, to the next group's start.</summary>
    static readonly Dictionary<string, string> GroupStarts = new()
    {
        ["model"] = "Model and adapter",
        ["bf16"] = "Precision, memory and device",
        ["train_file"] = "Data",
        ["learning_rate"] = "Optimisation",
        ["output_dir"] = "Output, evaluation and checkpoints",
    };

    static readonly Dictionary<string, string> ValueNames = new()
    {
        ["model"] = "<dir>", ["init_adapter"] = "<dir>", ["adapter_config"] = "<file>", ["output_dir"] = "<dir>", ["train_file"] = "<path>", ["eval_file"] = "<path>",
        ["method"] = "<name>", ["optim"] = "<name>", ["lr_scheduler_type"] = "<name>", ["task"] = "<causal_lm|seq_cls>",
        ["lora_target_modules"] = "<names>", ["resume_from_checkpoint"] = "[latest|<dir>]", ["device"] = "<device>",
        ["dataset_text_field"] = "<field>", ["label_column"] = "<field>", ["sample_prompt"] = "<text>",
    };

    static readonly TrainingOptions Defaults = new();

    /// <summary>Every key with its property and group, in the record's declaration order.</summary>
    public static IEnumerable<(string Key, PropertyInfo Property, string Group)> Keys()
    {
        var group = "Options";
        foreach (var property in typeof(TrainingOptions).GetProperties(BindingFlags.Public | BindingFlags.Instance).OrderBy(p => p.MetadataToken))
        {
            if (KeyOf(property) is not { } key) continue;
            group = GroupStarts.GetValueOrDefault(key, group);
            yield return (key, property, group);
        }
    }

    /// <summary>The property's doc summary, crefs to other options written as their flags; for method, the list of methods.</summary>
    public static string Describe(string key, PropertyInfo property)
    {
        var text = LibraryDocs.Summary(property, CrefName) ?? key.Replace('_', ' ');
        if (key == "method")
            text += $" One of: {string.Join(", ", Methods.Names)}; or {string.Join(", ", LayerwiseMethods.Names)}: layer-wise full fine-tuning, which writes the whole model.";
        return text;
    }

    /// <summary>The default as help shows it; none for an off flag or an unset path (the description says what happens).</summary>
    public static string? Default(PropertyInfo property) => property.GetValue(Defaults) switch
    {
        null or false => null,
        true => "on",
        string[] list => string.Join(",", list),
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        var v => v.ToString(),
    };

    /// <summary>"" (a bare flag) for booleans that default to off; a typed placeholder for the rest.</summary>
    public static string ValueName(string key, PropertyInfo property)
    {
        if (ValueNames.TryGetValue(key, out var name)) return name;
        var type = Nullable.GetUnderlyingType(property.PropertyType) ?? property.PropertyType;
        if (type == typeof(bool)) return Equals(property.GetValue(Defaults), true) ? "[true|false]" : "";
        if (type == typeof(int) || type == typeof(long)) return "<n>";
        if (type == typeof(double)) return "<x>";
        if (type == typeof(string[])) return "<a,b,...>";
        return "<text>";
    }

    static string? KeyOf(PropertyInfo p) =>
        TrainingOptionsFile.Keys.FirstOrDefault(k => k.Replace("_", "", StringComparison.Ordinal) == p.Name.ToLowerInvariant());

    // P:PeftSharp.Training.TrainingOptions.NumTrainEpochs -> --num-train-epochs; any other member -> its plain name.
    static string CrefName(string cref)
    {
        var name = cref[(cref.IndexOf(':') + 1)..];
        var paren = name.IndexOf('(');
        if (paren >= 0) name = name[..paren];
        var member = name[(name.LastIndexOf('.') + 1)..];
        var owner = typeof(TrainingOptions).FullName + ".";
        return name.StartsWith(owner, StringComparison.Ordinal) && typeof(TrainingOptions).GetProperty(member) is { } p && KeyOf(p) is { } key
            ? "--" + key.Replace('_', '-')
            : member;
    }
}
