using System.CommandLine;
using PeftSharp.Models;
using PeftSharp.Peft;
using static TorchSharp.torch;

namespace PeftSharp.Cli;

/// <summary>
/// <c>--adapter DIR</c> or <c>--adapter NAME=DIR</c> (repeatable) with <c>--row-adapters a,b,base,...</c>: several adapters
/// loaded at once, each input row or prompt naming its own (<c>base</c>: none), run as one mixed batch.
/// </summary>
internal sealed record AdapterSet(IReadOnlyList<(string Name, string Dir)> Adapters, IReadOnlyList<string>? Rows)
{
    public const string BaseRow = "base";

    public static Option<string[]> Option() => new Option<string[]>("--adapter")
    {
        Description = "PEFT adapter folder to apply to the model; name=DIR names it, and repeating the option loads several for --row-adapters",
        AllowMultipleArgumentsPerToken = false,
    }.Help(value: "<dir>");

    public static Option<string[]> RowsOption(string rowsAre) => new Option<string[]>("--row-adapters")
    {
        Description = $"the adapter of each {rowsAre}, comma-separated, '{BaseRow}' for none: all run as one batch",
        CustomParser = r => r.Tokens.SelectMany(t => t.Value.Split(',')).Select(s => s.Trim()).ToArray(),
    }.Help(value: "<a,b,base,...>");

    /// <summary>Checks the options against each other; row names are checked here, the row count by the command.</summary>
    public static AdapterSet Parse(string[]? adapters, string[]? rows)
    {
        adapters ??= [];
        var named = adapters.Select(Split).ToList();
        if (named.Count > 1 && named.Any(a => a.Name is null))
            throw new ArgumentException("--adapter: to load several adapters give each as NAME=DIR");
        var list = named.Select(a => (Name: a.Name ?? "default", a.Dir)).ToList();
        if (list.GroupBy(a => a.Name).FirstOrDefault(g => g.Count() > 1) is { } twice)
            throw new ArgumentException($"--adapter: the name '{twice.Key}' is given twice; give each adapter its own name");
        if (rows is not { Length: > 0 })
        {
            if (list.Count > 1) throw new ArgumentException("--adapter: several adapters need --row-adapters to say which row uses which");
            return new AdapterSet(list, null);
        }
        var names = list.Select(a => a.Name).ToHashSet();
        if (rows.FirstOrDefault(r => r != BaseRow && !names.Contains(r)) is { } unknown)
            throw new ArgumentException($"--row-adapters: no adapter named '{unknown}'; give one of {string.Join(", ", names.Append(BaseRow))} per row");
        return new AdapterSet(list, rows);
    }

    static (string? Name, string Dir) Split(string value)
    {
        int eq = value.IndexOf('=');
        if (eq <= 0 || Directory.Exists(value) || value[..eq].IndexOfAny(['/', '\\']) >= 0) return (null, value);
        return (value[..eq], value[(eq + 1)..]);
    }

    /// <summary>Refuses a row list whose length is not the batch's.</summary>
    public void CheckRows(int count, string what)
    {
        if (Rows is { } rows && rows.Count != count)
            throw new ArgumentException($"--row-adapters names {rows.Count} rows but {what} has {count}; give one adapter (or {BaseRow}) per row");
    }

    /// <summary>The base model with every adapter loaded; the first is active when there are no per-row adapters.</summary>
    public ILanguageModel Load(string modelDir, ScalarType dtype, Device device)
    {
        var model = AutoModel.Load(modelDir, dtype, device);
        if (Adapters.Count == 0) return model;
        var pm = PeftModel.FromPretrained(model, Adapters[0].Dir, Adapters[0].Name);
        foreach (var (name, dir) in Adapters.Skip(1)) pm.LoadAdapter(dir, name);
        return pm;
    }

    /// <summary>Runs <paramref name="run"/> with each row on its adapter, or plainly when no rows were named.</summary>
    public T Run<T>(ILanguageModel model, Func<T> run)
    {
        if (Rows is null) return run();
        if (model is not PeftModel pm) throw new ArgumentException("--row-adapters needs --adapter NAME=DIR");
        using var _ = pm.RowAdapters(Rows.Select(r => r == BaseRow ? null : r).ToList());
        return run();
    }
}
