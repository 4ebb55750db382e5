using PeftSharp.IO;
using PeftSharp.Native;
using static TorchSharp.torch;

namespace PeftSharp.Merging;

/// <summary>How a merge runs (mergekit's command-line options), as opposed to what it computes (<see cref="MergeConfig"/>).</summary>
public sealed record MergeOptions
{
    /// <summary>Largest output shard (mergekit's --out-shard-size); more tensors than this go to further shards plus an index.</summary>
    public long MaxShardBytes { get; init; } = 5_000_000_000;

    /// <summary>Merge models whose config.json name different architectures (mergekit's --allow-crimes).</summary>
    public bool AllowCrimes { get; init; }

    /// <summary>Tensors missing from some models are merged from those that have them, instead of failing.</summary>
    public bool AllowMissing { get; init; }

    /// <summary>Seed of DARE's random pruning; each tensor of each model gets its own stream derived from it.</summary>
    public long RandomSeed { get; init; }

    /// <summary>Copy tokenizer files from tokenizer_source (or the base) into the output.</summary>
    public bool CopyTokenizer { get; init; } = true;

    /// <summary>Called before each tensor is merged.</summary>
    public Action<MergeProgress>? Progress { get; init; }

    /// <summary>Writes more files into the staged output folder before it is published (aTLAS's atlas_coefficients.json).</summary>
    public Action<string>? BeforePublish { get; init; }
}

/// <summary>Progress over tensors: <paramref name="Done"/> of <paramref name="Total"/> finished, the next being <paramref name="Tensor"/>.</summary>
public sealed record MergeProgress(int Done, int Total, string Tensor, long BytesDone, long BytesTotal);

public sealed record MergeResult(string OutputFolder, int Tensors, long BytesWritten, IReadOnlyList<string> Warnings);

/// <summary>
/// Runs a merge tensor by tensor: for each output tensor it loads that tensor from each input, merges it and streams it
/// into the (sharded) output, so memory holds a few tensors per input model rather than any whole model.
/// </summary>
public static class ModelMerger
{
    public static MergeResult Run(MergeConfig config, string outputFolder, MergeOptions? options = null)
    {
        options ??= new MergeOptions();
        if (config.Slices is not null) return LayerStack.Run(config, outputFolder, options);
        var method = MergeMethods.Get(config.MergeMethod);
        if (method.Kind == MergeKind.Atlas)
            throw new MergeException("merge_method 'atlas' learns its coefficients from data: give it --train-file (Atlas.Run in the library)");
        var parameters = new MergeParameters(config, method);
        parameters.Check();
        using var inputs = MergeInputs.Open(config);
        var warnings = new List<string>();
        MergeValidation.Check(config, method, inputs, options, warnings);

        var reference = inputs.Base ?? inputs.Models[0].Source;
        var names = reference.Names.ToList();
        var depth = LayerDepth.For(names, reference.ConfigJson);
        var merger = new TensorMerger(method, inputs, parameters, depth, config.Lines, options.RandomSeed);
        Malloc.MapLargeBlocks(1 << 20);   // tensor-sized temporaries go back to the kernel when freed (see Malloc)
        var outType = ParseDType(config.OutDType ?? config.DType);

        var stage = MergeOutput.Stage(outputFolder);
        try
        {
            var (tensors, bytes) = config.AdapterOutput is { } ao
                ? WriteAdapter(stage, config, ao, inputs, reference, names, merger, outType, options)
                : WriteModel(stage, names, reference, merger, outType, options);
            if (config.AdapterOutput is null)
            {
                MergeOutput.CopyConfig(reference.ConfigJson, stage, DTypeName(outType));
                if (options.CopyTokenizer) MergeOutput.CopyTokenizer(TokenizerFolder(config, inputs, reference), stage);
            }
            options.BeforePublish?.Invoke(stage);
            MergeOutput.Publish(stage, outputFolder);
            return new MergeResult(outputFolder, tensors, bytes, warnings);
        }
        catch
        {
            MergeOutput.Discard(stage);
            throw;
        }
    }

    static (int Tensors, long Bytes) WriteModel(string stage, List<string> names, ModelSource reference, TensorMerger merger, ScalarType? outType, MergeOptions options)
    {
        var specs = names.Select(n => new TensorSpec(n, TensorMerger.IsFloat(reference.DType(n)) ? outType ?? reference.DType(n) : reference.DType(n),
            reference.Shape(n))).ToList();
        long total = specs.Sum(s => s.ByteLength), done = 0;
        using var writer = new ShardedCheckpointWriter(stage, specs, options.MaxShardBytes);
        for (int i = 0; i < specs.Count; i++)
        {
            var spec = specs[i];
            options.Progress?.Invoke(new MergeProgress(i, specs.Count, spec.Name, done, total));
            using (var scope = NewDisposeScope())
            {
                var stored = reference.DType(spec.Name);
                var merged = TensorMerger.IsFloat(stored) ? merger.Merged(spec.Name, TensorMerger.ComputeType(stored)) : reference.Load(spec.Name);
                writer.Write(spec.Name, merged.to(spec.DType));
            }
            Malloc.Trim();   // else fragmentation grows the heap past the size of a model (see Malloc)
            done += spec.ByteLength;
        }
        writer.Commit();
        options.Progress?.Invoke(new MergeProgress(specs.Count, specs.Count, "", total, total));
        return (specs.Count, total);
    }

    static (int Tensors, long Bytes) WriteAdapter(string stage, MergeConfig config, AdapterOutputConfig ao, MergeInputs inputs, ModelSource reference, List<string> names,
        TensorMerger merger, ScalarType? outType, MergeOptions options)
    {
        var adapters = inputs.Models.Select(m => m.Source.Adapter).OfType<AdapterDelta>().ToList();
        var targets = ao.TargetModules ?? (adapters.Count > 0 ? adapters.SelectMany(a => a.LoraModules).Distinct().ToList() : null);
        bool fanInFanOut = adapters.Any(a => a.FanInFanOut);
        var modules = LoraExport.Modules(names, reference.Shape, n => TensorMerger.IsFloat(reference.DType(n)), targets, fanInFanOut);
        var dtype = outType ?? ScalarType.Float32;
        LoraExport.Write(stage, modules, n => merger.Delta(n, TensorMerger.ComputeType(reference.DType(n))), ao, fanInFanOut,
            adapters.FirstOrDefault()?.TaskType, config.BaseModel, dtype,
            (i, m) => options.Progress?.Invoke(new MergeProgress(i, modules.Count, m + ".weight", i, modules.Count)));
        options.Progress?.Invoke(new MergeProgress(modules.Count, modules.Count, "", modules.Count, modules.Count));
        return (2 * modules.Count, new FileInfo(Path.Combine(stage, AdapterDelta.WeightsFile)).Length);
    }

    static string? TokenizerFolder(MergeConfig config, MergeInputs inputs, ModelSource reference)
    {
        var source = config.TokenizerSource;
        if (source is null or "base") return reference.Folder ?? reference.Under?.Folder;
        return inputs.All.FirstOrDefault(s => s.Reference == source)?.Folder
            ?? (Directory.Exists(source) ? source : config.BaseDirectory is { } d && Directory.Exists(Path.Combine(d, source)) ? Path.Combine(d, source) : null)
            ?? throw new MergeException($"tokenizer_source '{source}' is neither 'base' nor a model folder");
    }

    /// <summary>mergekit's dtype names (and the short forms); null means "as stored".</summary>
    public static ScalarType? ParseDType(string? name) => name?.ToLowerInvariant() switch
    {
        null => null,
        "float32" or "fp32" or "float" => ScalarType.Float32,
        "float16" or "fp16" or "half" => ScalarType.Float16,
        "bfloat16" or "bf16" => ScalarType.BFloat16,
        "float64" or "fp64" or "double" => ScalarType.Float64,
        _ => throw new MergeException($"dtype '{name}' is not one of float32, float16, bfloat16, float64"),
    };

    internal static string? DTypeName(ScalarType? t) => t switch
    {
        ScalarType.Float32 => "float32",
        ScalarType.Float16 => "float16",
        ScalarType.BFloat16 => "bfloat16",
        ScalarType.Float64 => "float64",
        _ => null,
    };
}
