using PeftSharp.Models;
using PeftSharp.Peft;
using static TorchSharp.torch.nn;

namespace PeftSharp.Tuners;

/// <summary>The injection loop layer tuners share: find targeted modules, wrap each (or add to its wrapper).</summary>
public static class LayerInjection
{
    /// <param name="wrap">Given the module path and the module now there, returns a new wrapper, or null if
    /// the adapter was added to an existing wrapper of this method.</param>
    /// <returns>The paths that were adapted.</returns>
    public static List<string> Inject(PeftModel model, LayerTunerConfig config, Func<string, Module, Module?> wrap)
    {
        var root = model.Base;
        var allLinear = config.TargetModules is { Regex: null } t && t.Names.Count == 1 && t.Names[0] == "all-linear";
        var candidates = ModuleTree.Walk(root).Where(x => x.Path.Length > 0 && !IsInsideWrapper(x.Path, root)).ToList();
        var targets = candidates
            .Where(x => allLinear ? IsAllLinearTarget(model, x.Path, x.Module) && !Excluded(config, x.Path) : TargetMatcher.Matches(config, x.Path))
            .Select(x => x.Path).ToList();
        if (targets.Count == 0 && config.LayersToTransform is { Length: > 0 } wanted)
        {
            var layers = candidates.Select(c => TargetMatcher.LayerIndex(c.Path, config.LayersPattern)).OfType<int>().Distinct().Order().ToList();
            var missing = wanted.Where(i => !layers.Contains(i)).ToList();
            if (missing.Count > 0)
                throw new ArgumentException($"layers_to_transform [{string.Join(", ", wanted)}] names layer(s) {string.Join(", ", missing)} " +
                    $"that {root.Config.Architecture} does not have " + (layers.Count > 0 ? $"(its layers are {layers[0]} to {layers[^1]})" : "(no numbered layers found)"));
        }
        if (targets.Count == 0)
        {
            var names = candidates.Select(c => c.Path.Split('.')[^1]).Where(n => !int.TryParse(n, out _)).Distinct().Order();
            throw new ArgumentException($"target_modules {config.TargetModules} matched no module of {root.Config.Architecture}. " +
                $"Module names that exist: {string.Join(", ", names)}");
        }
        foreach (var path in targets)
        {
            var current = ModuleTree.Get(root, path);
            var wrapper = wrap(path, current);
            if (wrapper is not null) ModuleTree.Replace(root, path, wrapper);
            // New modules start in training mode: the wrapper and the adapter's sub-modules follow the layer they adapt.
            if ((wrapper ?? current) is ITunerLayer layer) ((Module)layer).train(layer.BaseLayer.training);
        }
        return targets;
    }

    static bool Excluded(LayerTunerConfig c, string path) =>
        c.ExcludeModules is { } e && (e.Regex is { } re ? System.Text.RegularExpressions.Regex.IsMatch(path, $"^(?:{re})$")
            : e.Names.Any(n => path == n || path.EndsWith("." + n, StringComparison.Ordinal)));

    // "all-linear": every Linear/Conv1D except the output head, as PEFT expands it.
    static bool IsAllLinearTarget(PeftModel model, string path, Module m)
    {
        var layer = m is ITunerLayer w ? w.BaseLayer : m;
        if (!BaseLayers.IsLinear(layer)) return false;
        var last = path.Split('.')[^1];
        return last is not ("lm_head" or "classifier" or "score");
    }

    // Modules inside an existing wrapper (its base_layer, lora_A, ...) are never targets themselves.
    static bool IsInsideWrapper(string path, Module root)
    {
        var parts = path.Split('.');
        for (int i = 1; i < parts.Length; i++)
            if (ModuleTree.Get(root, string.Join('.', parts[..i])) is ITunerLayer) return true;
        return false;
    }
}
