using System.CommandLine;
using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Cli.Commands;

/// <summary><c>peftsharp merge</c>: fold one adapter (or a weighted combination) into the base and save a complete model.</summary>
internal static class MergeCommand
{
    public static Command Create()
    {
        var model = Options.Model();
        var adapters = new Option<string[]>("--adapter") { Description = "adapter folder; repeat for a weighted combination", Required = true };
        var weights = new Option<string>("--weights") { Description = "comma-separated weights, one per adapter (default 1 each)" };
        var combination = new Option<string>("--combination") { Description = "with several adapters: linear, cat, svd, ties, ties_svd, dare_linear, dare_ties, magnitude_prune, magnitude_prune_svd", DefaultValueFactory = _ => "linear" };
        var density = new Option<double?>("--density") { Description = "fraction kept by ties / dare / magnitude_prune" };
        var svdRank = new Option<int?>("--svd-rank") { Description = "rank of svd-based combinations" };
        var output = new Option<string>("--out") { Description = "folder to write the merged model to", Required = true };
        var dtype = Options.DType();
        var device = Options.Device();
        var shard = new Option<long>("--max-shard-size") { Description = "bytes per safetensors shard", DefaultValueFactory = _ => 5_000_000_000 };
        var cmd = new Command("merge", "Merge adapters into a model and write a complete Hugging Face checkpoint")
            { model, adapters, weights, combination, density, svdRank, output, dtype, device, shard };
        cmd.SetAction(CliErrors.Guard(r =>
        {
            var modelDir = r.GetValue(model)!;
            var dirs = r.GetValue(adapters)!;
            // The merge arithmetic (and svd-based combinations) run where the model is; saving copies back to the host.
            var baseModel = AutoModel.Load(modelDir, ScalarType.Float32, Options.ParseDevice(r.GetValue(device)!));
            var pm = PeftModel.FromPretrained(baseModel, dirs[0], "a0");
            for (int i = 1; i < dirs.Length; i++) pm.LoadAdapter(dirs[i], $"a{i}");
            var w = r.GetValue(weights)?.Split(',').Select(double.Parse).ToArray() ?? Enumerable.Repeat(1.0, dirs.Length).ToArray();
            if (w.Length != dirs.Length) throw new ArgumentException($"--weights has {w.Length} values for {dirs.Length} adapters");
            if (dirs.Length > 1 || w[0] != 1.0)
            {
                pm.AddWeightedAdapter(Enumerable.Range(0, dirs.Length).Select(i => $"a{i}").ToList(), w, "merged", r.GetValue(combination)!,
                    r.GetValue(svdRank), r.GetValue(density) ?? 1.0);
                pm.SetAdapter("merged");
            }
            var merged = pm.MergeAndUnload(safeMerge: true);
            ModelSaving.SavePretrained(merged, modelDir, r.GetValue(output)!, Options.ParseDType(r.GetValue(dtype)!), r.GetValue(shard));
            Console.WriteLine($"merged {dirs.Length} adapter(s) into {r.GetValue(output)}");
            return 0;
        }));
        return cmd;
    }
}
