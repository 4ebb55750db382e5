using System.CommandLine;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tuners.Lora;
using PeftSharp.Tuners.SparseFt;
using static TorchSharp.torch;

namespace PeftSharp.Cli.Commands;

/// <summary><c>peftsharp merge</c>: fold one adapter (or a weighted combination) into the base and save a complete model.</summary>
internal static class MergeCommand
{
    public static Command Create()
    {
        var model = Options.Model();
        var adapters = Options.Adapters();
        var weights = Options.Numbers("--weights", "one weight per adapter, comma-separated (default: 1 each)");
        var combination = new Option<string>("--combination")
        {
            Description = "how several adapters combine (PEFT's add_weighted_adapter): linear, cat, svd, ties, ties_svd, dare_linear, " +
                "dare_linear_svd, dare_ties, dare_ties_svd, magnitude_prune, magnitude_prune_svd",
            DefaultValueFactory = _ => "linear",
        }.Help(defaultText: "linear", value: "<name>");
        var density = Options.Number("--density", "share of each adapter's entries kept by ties, dare and magnitude_prune (0 to 1]")
            .Must(d => d > 0 && d <= 1, "must be in (0, 1]").Help(defaultText: "1");
        var svdRank = Options.WholeNumber("--svd-rank", "rank of the svd-based combinations (default: the largest input rank)")
            .Must(r => r >= 1, "must be at least 1");
        var output = new Option<string>("--out") { Description = "folder to write the merged model to (config.json, safetensors, tokenizer files)", Required = true }.Help(value: "<dir>");
        var dtype = Options.DType("dtype of the written weights");
        var device = Options.Device();
        var shard = Options.MaxShardSize();
        var cmd = new Command("merge", "Merge adapters into a model and write a complete Hugging Face checkpoint")
            { model, adapters, weights, combination, density, svdRank, output, dtype, device, shard };
        cmd.SetAction(r =>
        {
            var modelDir = r.GetValue(model)!;
            var dirs = r.GetValue(adapters)!;
            var outDir = r.GetValue(output)!;
            // An option not given reads as an empty list: then every adapter weighs 1.
            var w = r.GetValue(weights) is { Length: > 0 } given ? given : Enumerable.Repeat(1.0, dirs.Length).ToArray();
            if (w.Length != dirs.Length) throw new ArgumentException($"--weights has {w.Length} value(s) for {dirs.Length} --adapter folder(s): give one weight per adapter");
            Options.CheckOutputFolder("--out", outDir);
            // The merge arithmetic (and svd-based combinations) run where the model is; saving copies back to the host.
            var baseModel = AutoModel.Load(modelDir, ScalarType.Float32, Options.ParseDevice(r.GetValue(device)!));
            var pm = PeftModel.FromPretrained(baseModel, dirs[0], "a0");
            for (int i = 1; i < dirs.Length; i++) pm.LoadAdapter(dirs[i], $"a{i}");
            var names = Enumerable.Range(0, dirs.Length).Select(i => $"a{i}").ToList();
            if (names.All(n => SparseComposition.IsSparse(pm.Configs[n])))
            {
                // Sparse deltas compose by addition: merging them all writes W + Σ w_i δ_i.
                if (r.GetValue(combination) is { } how && how != "linear")
                    throw new ArgumentException($"--combination {how}: sparse deltas (SPARSE_FT, SHIRA) compose by addition only; use linear");
                SparseComposition.ComposeInPlace(pm, names, w);
            }
            else if (dirs.Length > 1 || w[0] != 1.0)
            {
                pm.AddWeightedAdapter(Enumerable.Range(0, dirs.Length).Select(i => $"a{i}").ToList(), w, "merged", r.GetValue(combination)!,
                    r.GetValue(svdRank), r.GetValue(density) ?? 1.0);
                pm.SetAdapter("merged");
            }
            var merged = pm.MergeAndUnload(safeMerge: true);
            ModelSaving.SavePretrained(merged, modelDir, outDir, r.GetValue(dtype), r.GetValue(shard));
            r.InvocationConfiguration.Output.WriteLine($"merged {dirs.Length} adapter(s) into {outDir}");
            return 0;
        });
        return cmd;
    }
}
