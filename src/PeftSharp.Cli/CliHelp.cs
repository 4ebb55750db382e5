using System.CommandLine;
using System.Runtime.CompilerServices;
using System.Text;

namespace PeftSharp.Cli;

/// <summary>
/// <c>--help</c> for every command: usage lines that say <c>peftsharp</c>, each option with its value, description and
/// default, options in named groups, and boolean options shown as bare flags.
/// </summary>
internal static class CliHelp
{
    public const string Tool = "peftsharp";

    sealed record Info(string? Group, string? Default, string? Value);

    static readonly ConditionalWeakTable<Option, Info> Infos = new();

    /// <summary>Help details System.CommandLine does not hold: a group heading, the default as shown, the value's name.</summary>
    public static T Help<T>(this T option, string? group = null, string? defaultText = null, string? value = null) where T : Option
    {
        var old = Infos.TryGetValue(option, out var i) ? i : new Info(null, null, null);
        Infos.AddOrUpdate(option, new Info(group ?? old.Group, defaultText ?? old.Default, value ?? old.Value));
        return option;
    }

    /// <summary>The command as typed: <c>peftsharp merge-models</c>.</summary>
    public static string Path(Command command)
    {
        var names = new List<string>();
        for (var c = command; c is not null and not RootCommand; c = c.Parents.OfType<Command>().FirstOrDefault()) names.Insert(0, c.Name);
        return string.Join(' ', [Tool, .. names]);
    }

    public static void Write(Command command, TextWriter output, int width = 100)
    {
        var text = new StringBuilder();
        if (command.Description is { } about) text.AppendLine(about).AppendLine();
        var args = string.Concat(command.Arguments.Where(a => !a.Hidden).Select(a => $" <{a.Name}>"));
        text.AppendLine("Usage:");
        text.AppendLine(command.Subcommands.Count > 0 ? $"  {Path(command)} <command> [options]" : $"  {Path(command)}{args} [options]");

        var rows = new List<(string? Group, string Label, string Text)>();
        foreach (var a in command.Arguments.Where(a => !a.Hidden)) rows.Add(("Arguments", $"<{a.Name}>", a.Description ?? ""));
        foreach (var c in command.Subcommands.Where(c => !c.Hidden)) rows.Add(("Commands", c.Name, c.Description ?? ""));
        var options = command.Options.Concat(command.Parents.OfType<Command>().SelectMany(p => p.Options).Where(o => o.Recursive))
            .Where(o => !o.Hidden).Distinct().ToList();
        // Ungrouped options (help among them) come first, then the groups in the order their first option was added.
        foreach (var o in options.OrderBy(o => Infos.TryGetValue(o, out var i) && i.Group is not null ? 1 : 0))
            rows.Add((Infos.TryGetValue(o, out var info) ? info.Group ?? "Options" : "Options", Label(o), Describe(o)));

        int column = Math.Min(34, rows.Count == 0 ? 0 : rows.Max(r => r.Label.Length) + 4);
        foreach (var group in rows.Select(r => r.Group).Distinct())
        {
            text.AppendLine().AppendLine($"{group}:");
            foreach (var row in rows.Where(r => r.Group == group)) AppendRow(text, row.Label, row.Text, column, width);
        }
        if (command.Subcommands.Count > 0) text.AppendLine().AppendLine($"'{Path(command)} <command> --help' describes a command and its options.");
        output.Write(text.ToString());
    }

    static string Label(Option o)
    {
        // DOS-style aliases (/h, /?, -?) are accepted but not advertised.
        var names = string.Join(", ", o.Aliases.Append(o.Name).Distinct().Where(n => n[0] == '-' && n != "-?")
            .OrderBy(n => n.StartsWith("--", StringComparison.Ordinal) ? 1 : 0).ThenBy(n => n == o.Name ? 0 : 1));
        // A value name of "" marks a bare flag.
        var value = Infos.TryGetValue(o, out var i) && i.Value is not null ? i.Value
            : o.ValueType == typeof(bool) || o is System.CommandLine.Help.HelpOption or VersionOption ? ""
            : $"<{o.HelpName ?? o.Name.TrimStart('-')}>";
        return value.Length == 0 ? names : $"{names} {value}";
    }

    static string Describe(Option o)
    {
        var text = (o.Description ?? "").TrimEnd();
        if (Infos.TryGetValue(o, out var i) && i.Default is { } d) text += $" [default: {d}]";
        if (o.Required) text += " (required)";
        return text;
    }

    // Two columns; the description wraps at word boundaries within the width, under its own column.
    static void AppendRow(StringBuilder text, string label, string description, int column, int width)
    {
        var line = new StringBuilder("  " + label);
        if (line.Length + 2 > column) { text.AppendLine(line.ToString()); line.Clear(); }
        line.Append(' ', column - line.Length);
        int start = line.Length;
        foreach (var word in description.Split(' ', StringSplitOptions.RemoveEmptyEntries))
        {
            if (line.Length > start && line.Length + 1 + word.Length > width)
            {
                text.AppendLine(line.ToString());
                line.Clear().Append(' ', column);
            }
            if (line.Length > start && line[^1] != ' ') line.Append(' ');
            line.Append(word);
        }
        text.AppendLine(line.ToString().TrimEnd());
    }
}
