using System.Text.Json.Nodes;
using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tests.Cli;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Tests.SparseFt;

/// <summary><c>peftsharp graft</c> on tinycode-3m against a fine-tune of it (the base plus a merged random LoRA on q/v).</summary>
public sealed class GraftCliTests
{
    [Fact]
    public void The_graft_holds_the_budget_of_each_target_and_the_tuned_values_there()
    {
        var dir = IO.SafetensorsTests.TempDir();
        var tuned = Path.Combine(dir, "tuned");
        using (NewDisposeScope())
        {
            random.manual_seed(5);
            var pm = PeftModel.Create(AutoModel.Load(CliRun.TinyCode), new LoraConfig { R = 2, InitLoraWeights = "gaussian", TargetModules = ["q_proj", "v_proj"] });
            using (no_grad())
                foreach (var (name, p) in pm.Base.named_parameters())
                    if (name.Contains("lora_B", StringComparison.Ordinal)) p.normal_(0, 0.1);
            ModelSaving.SavePretrained(pm.MergeAndUnload(), CliRun.TinyCode, tuned);
        }
        var data = Path.Combine(dir, "data.jsonl");
        File.WriteAllLines(data, File.ReadLines(Repo.Path("data", "first-run", "eval.jsonl")).Take(4));
        var outDir = Path.Combine(dir, "graft");

        var r = CliRun.Run("graft", "--model", CliRun.TinyCode, "--tuned", tuned, "--data", data, "--out", outDir,
            "--density", "0.02", "--steps", "2", "--target-modules", "q_proj", "v_proj", "--max-length", "64");
        Assert.True(r.Code == 0, r.Err);
        Assert.Contains("step 2: graft loss", r.Out);

        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "adapter_config.json")))!;
        Assert.Equal("SPARSE_FT", (string?)config["peft_type"]);
        Assert.Equal("graft", (string?)config["method"]);
        using var baseWeights = Checkpoint.Open(CliRun.TinyCode);
        using var tunedWeights = Checkpoint.Open(tuned);
        using var f = SafetensorsFile.Open(Path.Combine(outDir, PeftModel.WeightsFile));
        var values = f.Names.Where(k => k.EndsWith(".sparse_ft_values", StringComparison.Ordinal)).ToList();
        Assert.Equal(12, values.Count);                                      // 6 layers x (q_proj, v_proj)
        foreach (var key in values)
        {
            using var scope = NewDisposeScope();
            var weight = key["base_model.model.".Length..key.LastIndexOf('.')] + ".weight";
            var w0 = baseWeights.Load(weight).to(ScalarType.Float32).flatten();
            var wt = tunedWeights.Load(weight).to(ScalarType.Float32).flatten();
            var idx = f.Load(key.Replace(".sparse_ft_values", ".sparse_ft_indices"));
            Assert.Equal((long)Math.Ceiling(0.02m * w0.shape[0]), idx.shape[0]);       // the budget, exactly
            Assert.Equal(idx.shape[0], idx.unique().Item1.shape[0]);                   // no entry twice
            // The graft carries the fine-tune's own change on its entries: θ_ft − θ_pre.
            Assert.True(allclose(f.Load(key).to(ScalarType.Float32), wt.index_select(0, idx) - w0.index_select(0, idx), 1e-6, 1e-7), key);
        }
    }

    [Fact]
    public void A_missing_tuned_model_is_named()
    {
        var dir = IO.SafetensorsTests.TempDir();
        var data = Path.Combine(dir, "data.jsonl");
        File.WriteAllLines(data, File.ReadLines(Repo.Path("data", "first-run", "eval.jsonl")).Take(1));
        var r = CliRun.Run("graft", "--model", CliRun.TinyCode, "--tuned", Path.Combine(dir, "nope"), "--data", data, "--out", Path.Combine(dir, "o"));
        Assert.Equal(1, r.Code);
        Assert.Contains("--tuned", r.Err);
        Assert.Contains("no such folder", r.Err);
    }
}
