using System.Text.Json.Nodes;

namespace PeftSharp.Merging;

/// <summary>
/// Everything that can be checked before the first tensor is merged: the method's needs, architectures, and that
/// every tensor is present with the same shape in every input. Reading headers is cheap; failing after an hour is not.
/// </summary>
internal static class MergeValidation
{
    public static void Check(MergeConfig config, MergeMethod method, MergeInputs inputs, MergeOptions options, List<string> warnings)
    {
        CheckMethod(config, method, inputs);
        CheckArchitectures(inputs, options);
        CheckTensors(inputs, options, warnings);
    }

    static void CheckMethod(MergeConfig config, MergeMethod method, MergeInputs inputs)
    {
        string name = method.Name;
        if (inputs.Models.Count == 0) throw new MergeException("'models:' is empty: nothing to merge");
        if (method.NeedsBase && inputs.Base is null) throw new MergeException($"merge_method '{name}' needs base_model");
        if (config.Lines is not null && inputs.Base is null) throw new MergeException("lines (LiNeS) scales task vectors, so it needs base_model");
        if (config.AdapterOutput is not null && inputs.Base is null) throw new MergeException("adapter_output needs base_model: the adapter is for it");
        if (config.TokenizerSource is "union")
            throw new MergeException("tokenizer_source 'union' (merging vocabularies) is not supported; use 'base' or a model folder");
        if (method.Kind == MergeKind.Passthrough && inputs.Models.Count != 1)
            throw new MergeException($"passthrough copies exactly one model (or stacks layer ranges with 'slices:'); got {inputs.Models.Count}");
        int others = inputs.NonBase.Count();
        var (least, most, what) = method.Kind switch
        {
            MergeKind.Slerp or MergeKind.NearSwap => (1, 1, "exactly one model besides base_model"),
            MergeKind.NuSlerp => (2, 2, "exactly two models besides base_model (which is optional)"),
            MergeKind.ModelStock => (2, int.MaxValue, "at least two models besides base_model"),
            MergeKind.Linear or MergeKind.Karcher or MergeKind.Passthrough => (0, int.MaxValue, ""),
            _ => (1, int.MaxValue, "at least one model besides base_model"),
        };
        if (others < least || others > most)
            throw new MergeException($"merge_method '{name}' needs {what}; got {others}");
        if (method.Kind is not (MergeKind.TaskVectors or MergeKind.Pcb) && inputs.Models.Any(m => m.Entry.SourceBase is not null))
            throw new MergeException($"source_base (fine-tuning transfer) works with task-vector methods, not '{name}'");
    }

    static void CheckArchitectures(MergeInputs inputs, MergeOptions options)
    {
        if (options.AllowCrimes) return;
        (string Who, string What)? first = null;
        foreach (var s in inputs.All)
        {
            if (s.ConfigJson is not { } path || JsonNode.Parse(File.ReadAllText(path)) is not JsonObject o) continue;
            var what = $"{o["model_type"]?.ToString() ?? "?"} {o["architectures"]?.ToJsonString() ?? "[]"}";
            if (first is null) first = (s.Reference, what);
            else if (first.Value.What != what)
                throw new MergeException($"model '{s.Reference}' is {what} but '{first.Value.Who}' is {first.Value.What}: merging different " +
                    "architectures rarely makes sense; pass --allow-crimes (MergeOptions.AllowCrimes) to do it anyway");
        }
    }

    static void CheckTensors(MergeInputs inputs, MergeOptions options, List<string> warnings)
    {
        var reference = inputs.Base ?? inputs.Models[0].Source;
        var referenceNames = reference.Names.ToHashSet();
        string Label(ModelSource s) => ReferenceEquals(s, inputs.Base) ? $"base '{s.Reference}'" : $"'{s.Reference}'";
        foreach (var source in inputs.All.Where(s => !ReferenceEquals(s, reference)))
        {
            var missing = referenceNames.Where(n => !source.Contains(n)).ToList();
            if (missing.Count > 0 && !options.AllowMissing)
                throw new MergeException($"model '{source.Reference}' has no tensor '{missing[0]}'" +
                    (missing.Count > 1 ? $" (nor {missing.Count - 1} more)" : "") + $", which {Label(reference)} has: is it another " +
                    "architecture? Pass --allow-missing to merge such tensors from the models that have them");
            if (missing.Count > 0) warnings.Add($"'{source.Reference}' lacks {missing.Count} tensors (e.g. '{missing[0]}'); merged without it");
            var extra = source.Names.Where(n => !referenceNames.Contains(n)).ToList();
            if (extra.Count > 0) warnings.Add($"'{source.Reference}' has {extra.Count} tensors {Label(reference)} lacks (e.g. '{extra[0]}'); left out");
            if (source.Adapter is { } adapter && adapter.Targets.FirstOrDefault(t => !referenceNames.Contains(t)) is { } stray)
                throw new MergeException($"adapter '{source.Reference}' changes '{stray}', which {Label(reference)} does not have: is this adapter for another model?");
            foreach (var n in referenceNames.Where(source.Contains))
            {
                var a = reference.Shape(n);
                var b = source.Shape(n);
                if (a.SequenceEqual(b)) continue;
                bool vocab = n.Contains("embed", StringComparison.Ordinal) || n.Contains("lm_head", StringComparison.Ordinal) || n.Contains("wte", StringComparison.Ordinal);
                throw new MergeException($"tensor '{n}': {Label(reference)} has shape [{string.Join(",", a)}] but '{source.Reference}' has " +
                    $"[{string.Join(",", b)}]" + (vocab ? ": the vocabularies differ; merge models that share a tokenizer" : ": are these the same architecture?"));
            }
        }
    }
}
