using System.Text.Json;
using System.Text.Json.Nodes;
using PeftSharp.IO;
using PeftSharp.Native;
using static TorchSharp.torch;

namespace PeftSharp.Merging;

/// <summary>
/// mergekit's <c>slices:</c> with passthrough: a new model whose layers are the given layer ranges of other models, in
/// order (layer stacking, "frankenmerges"). The weights before the layers come from the first slice's model, those after
/// them (final norm, head) from the last slice's; each layer's tensors are renumbered to their place in the stack and
/// scaled by <c>scale</c> when set. Streamed tensor by tensor; config.json records the new layer count.
/// </summary>
internal static class LayerStack
{
    sealed record Planned(string Out, ModelSource Source, string In, SliceSource From, MergeSlice Slice, double Depth);

    public static MergeResult Run(MergeConfig config, string outputFolder, MergeOptions options)
    {
        var method = MergeMethods.Get(config.MergeMethod);
        if (method.Kind != MergeKind.Passthrough)
            throw new MergeException($"'slices:' stacks layers with merge_method passthrough; '{method.Name}' over slices is not supported (use 'models:')");
        CheckParameters(config);
        var slices = config.Slices!;
        for (int i = 0; i < slices.Count; i++)
            if (slices[i].Sources.Count != 1)
                throw new MergeException($"slices[{i}]: passthrough takes exactly one source per slice; got {slices[i].Sources.Count}");
        // Open each model once, resolved as models: entries are (relative to the config's folder too).
        var references = slices.Select(s => s.Sources[0].Model).Distinct().ToList();
        using var inputs = MergeInputs.Open(config with { Models = references.Select(r => new MergeModel(r)).ToList(), BaseModel = null });
        var sources = references.Zip(inputs.Models, (r, m) => (r, m.Source)).ToDictionary(p => p.r, p => p.Source);

        var plan = Plan(slices, sources);
        int layers = slices.Sum(s => s.Sources[0].End - s.Sources[0].Start);
        var outType = ModelMerger.ParseDType(config.OutDType ?? config.DType);
        var first = sources[slices[0].Sources[0].Model];
        var stage = MergeOutput.Stage(outputFolder);
        try
        {
            var specs = plan.Select(p => new TensorSpec(p.Out, TensorMerger.IsFloat(p.Source.DType(p.In)) ? outType ?? p.Source.DType(p.In) : p.Source.DType(p.In),
                p.Source.Shape(p.In))).ToList();
            long total = specs.Sum(s => s.ByteLength), done = 0;
            using (var writer = new ShardedCheckpointWriter(stage, specs, options.MaxShardBytes))
            {
                for (int i = 0; i < plan.Count; i++)
                {
                    options.Progress?.Invoke(new MergeProgress(i, plan.Count, plan[i].Out, done, total));
                    using (var scope = NewDisposeScope())
                    {
                        var p = plan[i];
                        var tensor = p.Source.Load(p.In);
                        if (Scale(config, p) is double s && TensorMerger.IsFloat(tensor.dtype))
                            tensor = tensor.to(TensorMerger.ComputeType(tensor.dtype)).mul_(s);
                        writer.Write(p.Out, tensor.to(specs[i].DType));
                    }
                    Malloc.Trim();
                    done += specs[i].ByteLength;
                }
                writer.Commit();
            }
            options.Progress?.Invoke(new MergeProgress(plan.Count, plan.Count, "", total, total));
            MergeOutput.CopyConfig(first.ConfigJson, stage, ModelMerger.DTypeName(outType));
            SetLayerCount(Path.Combine(stage, "config.json"), layers);
            if (options.CopyTokenizer) MergeOutput.CopyTokenizer(first.Folder, stage);
            MergeOutput.Publish(stage, outputFolder);
            return new MergeResult(outputFolder, plan.Count, total, []);
        }
        catch
        {
            MergeOutput.Discard(stage);
            throw;
        }
    }

    // Before the layers from the first slice's model, the layers slice by slice, after the layers from the last one.
    static List<Planned> Plan(IReadOnlyList<MergeSlice> slices, Dictionary<string, ModelSource> sources)
    {
        var plan = new List<Planned>();
        var firstSlice = slices[0];
        var lastSlice = slices[^1];
        var firstSource = sources[firstSlice.Sources[0].Model];
        var lastSource = sources[lastSlice.Sources[0].Model];
        foreach (var n in firstSource.Names.Where(n => LayerDepth.LayerIndex(n) is null && LayerDepth.IsEmbedding(n)))
            plan.Add(new(n, firstSource, n, firstSlice.Sources[0], firstSlice, 0));
        int next = 0;
        foreach (var slice in slices)
        {
            var from = slice.Sources[0];
            var source = sources[from.Model];
            var byLayer = source.Names.Where(n => LayerDepth.LayerIndex(n) is not null).ToLookup(n => LayerDepth.LayerIndex(n)!.Value);
            int count = from.End - from.Start;
            if (!byLayer.Contains(from.End - 1))
                throw new MergeException($"slice of '{from.Model}': layer_range [{from.Start}, {from.End}] goes past its last layer " +
                    $"({(byLayer.Count == 0 ? "it has no layers" : $"{byLayer.Max(g => g.Key)}")})");
            for (int j = 0; j < count; j++)
            {
                double t = count > 1 ? j / (double)(count - 1) : 1;     // gradients are read over each slice, as in mergekit
                foreach (var n in byLayer[from.Start + j])
                    plan.Add(new(LayerDepth.WithLayerIndex(n, next), source, n, from, slice, t));
                next++;
            }
        }
        foreach (var n in lastSource.Names.Where(n => LayerDepth.LayerIndex(n) is null && !LayerDepth.IsEmbedding(n)))
            plan.Add(new(n, lastSource, n, lastSlice.Sources[0], lastSlice, 0));
        return plan;
    }

    // passthrough reads one parameter, scale: the source's, then the slice's, then the global one.
    static void CheckParameters(MergeConfig config)
    {
        void Check(IReadOnlyDictionary<string, ParameterSetting>? ps, string where)
        {
            foreach (var name in ps?.Keys ?? Enumerable.Empty<string>())
                if (name != "scale")
                    throw new MergeException($"{where}: merge_method 'passthrough' does not read '{name}' (it reads global: none; per model: scale)");
        }
        Check(config.Parameters, "parameters");
        for (int i = 0; i < config.Slices!.Count; i++)
        {
            Check(config.Slices[i].Parameters, $"slices[{i}].parameters");
            for (int j = 0; j < config.Slices[i].Sources.Count; j++) Check(config.Slices[i].Sources[j].Parameters, $"slices[{i}].sources[{j}].parameters");
        }
    }

    static double? Scale(MergeConfig config, Planned p)
    {
        foreach (var ps in new[] { p.From.Parameters, p.Slice.Parameters, config.Parameters })
            if (ps is not null && ps.TryGetValue("scale", out var s) && s.Evaluate(p.In, p.Depth) is { } v)
                return v as double? ?? throw new MergeException($"parameter 'scale' must be a number, got '{v}' (tensor '{p.In}')");
        return null;
    }

    static void SetLayerCount(string configJson, int layers)
    {
        if (!File.Exists(configJson) || JsonNode.Parse(File.ReadAllText(configJson)) is not JsonObject root) return;
        foreach (var o in new[] { root, root["text_config"] as JsonObject })
            foreach (var key in new[] { "num_hidden_layers", "n_layer", "num_layers" })
                if (o?.ContainsKey(key) == true) o[key] = layers;
        AtomicFile.WriteAllText(configJson, root.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }
}
