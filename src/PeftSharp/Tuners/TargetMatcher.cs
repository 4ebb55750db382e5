using System.Text.RegularExpressions;

namespace PeftSharp.Tuners;

/// <summary>PEFT's rules for which modules a config targets (peft.tuners.tuners_utils.check_target_module_exists).</summary>
public static class TargetMatcher
{
    public static bool Matches(LayerTunerConfig c, string path)
    {
        if (c.TargetModules is null) return false;
        if (IsExcluded(c.ExcludeModules, path)) return false;
        bool found = c.TargetModules.Regex is { } re
            ? Regex.IsMatch(path, $"^(?:{re})$")
            : c.TargetModules.Names.Any(t => path == t || path.EndsWith("." + t, StringComparison.Ordinal));
        if (!found || c.LayersToTransform is not { Length: > 0 } layers) return found;
        var index = LayerIndex(path, c.LayersPattern);
        return index is { } i && layers.Contains(i);
    }

    static bool IsExcluded(ModuleSelector? exclude, string path)
    {
        if (exclude is null) return false;
        if (exclude.Regex is { } re) return Regex.IsMatch(path, $"^(?:{re})$");
        return exclude.Names.Any(t => path == t || path.EndsWith("." + t, StringComparison.Ordinal));
    }

    /// <summary>The layer number in a path such as "model.layers.3.self_attn.q_proj" (after <paramref name="patterns"/> if given).</summary>
    public static int? LayerIndex(string path, string[]? patterns)
    {
        if (patterns is not { Length: > 0 })
        {
            var m = Regex.Match(path, @"^.*\.[^.]*\.(\d+)\.");
            return m.Success ? int.Parse(m.Groups[1].Value) : null;
        }
        foreach (var p in patterns)
        {
            var m = Regex.Match(path, $@"^.*\.{p}\.(\d+)\.");
            if (m.Success) return int.Parse(m.Groups[1].Value);
        }
        return null;
    }

    /// <summary>PEFT's rank_pattern/alpha_pattern lookup: the first key matching the end of the path as a regex.</summary>
    public static string? PatternKey(IReadOnlyDictionary<string, double>? patterns, string path)
    {
        if (patterns is null) return null;
        foreach (var key in patterns.Keys)
            if (Regex.IsMatch(path, $@"^(.*\.)?({key})$")) return key;
        return null;
    }
}
