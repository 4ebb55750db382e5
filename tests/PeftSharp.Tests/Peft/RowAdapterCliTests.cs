using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tests.Cli;
using PeftSharp.Tuners.Lora;
using static PeftSharp.Tests.Cli.CliRun;
using static TorchSharp.torch;

namespace PeftSharp.Tests.PeftModelTests;

/// <summary><c>logits|generate --adapter NAME=DIR ... --row-adapters</c> against one-adapter runs of the same command.</summary>
[Collection(SerialRng.Name)]
public class RowAdapterCliTests
{
    // Two LoRA adapters of ranks 2 and 4 for tinycode-3m, saved as dir/a and dir/b.
    static string TwoAdapters()
    {
        var dir = Merging.TestDirs.New();
        manual_seed(5);
        var pm = PeftModel.Create(AutoModel.Load(TinyCode), new LoraConfig { R = 2, TargetModules = ["q_proj", "v_proj"], InitLoraWeights = "false" }, "a");
        pm.AddAdapter("b", new LoraConfig { R = 4, LoraAlpha = 4, TargetModules = ["all-linear"], InitLoraWeights = "false" });
        pm.Save(dir);
        return dir;
    }

    static Tensor Logits(string inputs, string dir, params string[] extra)
    {
        var outPath = Path.Combine(dir, Guid.NewGuid().ToString("N") + ".safetensors");
        var r = Run(["logits", "--model", TinyCode, "--inputs", inputs, "--out", outPath, "--device", "cpu", .. extra]);
        Assert.True(r.Code == 0, r.Err);
        using var file = SafetensorsFile.Open(outPath);
        return file.Load("logits");
    }

    [Fact]
    public void Logits_rows_match_single_adapter_runs_and_bad_row_lists_name_the_option()
    {
        using var scope = NewDisposeScope();
        var dir = TwoAdapters();
        var inputs = Path.Combine(dir, "in.safetensors");
        SafetensorsWriter.Save(inputs, new Dictionary<string, Tensor> { ["input_ids"] = tensor(new long[] { 5, 6, 7, 8, 9, 10, 11, 12, 13 }).view(3, 3) });
        string a = Path.Combine(dir, "a"), b = Path.Combine(dir, "b");

        var mixed = Logits(inputs, dir, "--adapter", $"a={a}", "--adapter", $"b={b}", "--row-adapters", "b,base,a");
        // Relative to the logits' size (~20 here): a one-row GEMM rounds differently from a three-row one, by a few float32 ulps.
        var alone = Logits(inputs, dir, "--adapter", b);
        double tol = 1e-6 * Math.Max(1, alone.abs().max().item<float>());
        Numerics.Close(alone[0], mixed[0], tol, "row 0 (b)");
        Numerics.Close(Logits(inputs, dir)[1], mixed[1], tol, "row 1 (base)");
        Numerics.Close(Logits(inputs, dir, "--adapter", a)[2], mixed[2], tol, "row 2 (a)");

        Run("logits", "--model", TinyCode, "--inputs", inputs, "--out", Path.Combine(dir, "x.safetensors"), "--adapter", $"a={a}", "--row-adapters", "a,c,a")
            .AssertError("--row-adapters", "'c'");
        Run("logits", "--model", TinyCode, "--inputs", inputs, "--out", Path.Combine(dir, "x.safetensors"), "--adapter", $"a={a}", "--row-adapters", "a,base")
            .AssertError("--row-adapters", "2 rows", "3");
        Run("logits", "--model", TinyCode, "--inputs", inputs, "--out", Path.Combine(dir, "x.safetensors"), "--adapter", $"a={a}", "--adapter", $"b={b}")
            .AssertError("--adapter", "--row-adapters");
    }

    [Fact]
    public void Generate_prompts_file_gives_each_prompt_its_adapter()
    {
        var dir = TwoAdapters();
        string a = Path.Combine(dir, "a"), b = Path.Combine(dir, "b");
        var prompts = Path.Combine(dir, "prompts.jsonl");
        File.WriteAllLines(prompts, ["{\"prompt\": \"def add(a, b):\", \"adapter\": \"a\"}", "{\"prompt\": \"def add(a, b):\"}", "{\"prompt\": \"def add(a, b):\", \"adapter\": \"b\"}"]);
        string[] common = ["generate", "--model", TinyCode, "--max-new-tokens", "6", "--device", "cpu", "--json"];
        var mixed = Run([.. common, "--prompts", prompts, "--adapter", $"a={a}", "--adapter", $"b={b}"]);
        Assert.True(mixed.Code == 0, mixed.Err);
        var lines = mixed.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(3, lines.Length);
        string One(params string[] adapter) => Run([.. common, "--prompt", "def add(a, b):", .. adapter]).Out.Trim();
        Assert.Equal(One("--adapter", a), lines[0]);
        Assert.Equal(One(), lines[1]);
        Assert.Equal(One("--adapter", b), lines[2]);
        Assert.NotEqual(lines[0], lines[2]);

        File.WriteAllLines(prompts, ["{\"prompt\": \"x\"}", "{\"text\": \"y\"}"]);
        Run([.. common, "--prompts", prompts]).AssertError($"{prompts}:2", "prompt");
    }
}
