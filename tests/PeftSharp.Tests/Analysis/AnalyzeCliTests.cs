using System.Text.Json;
using PeftSharp.Analysis;
using PeftSharp.IO;
using PeftSharp.Merging;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tests.Cli;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Analysis;

/// <summary><c>peftsharp analyze</c> on tinycode-3m, in process, with a tiny random LoRA adapter made by the library.</summary>
public sealed class AnalyzeCliTests
{
    static readonly Lazy<string> adapter = new(MakeAdapter);

    /// <summary>LoRA r=4 on q_proj and v_proj with large random factors, so that dW dominates some top directions.</summary>
    static string MakeAdapter()
    {
        using var scope = NewDisposeScope();
        var pm = PeftModel.Create(AutoModel.Load(CliRun.TinyCode), new LoraConfig { R = 4, LoraAlpha = 8, TargetModules = ["q_proj", "v_proj"] });
        var g = new Generator(7);
        using (no_grad())
            foreach (var (name, p) in pm.Base.named_parameters())
                if (name.Contains("lora_", StringComparison.Ordinal)) p.copy_(0.3 * randn(p.shape, generator: g));
        var dir = Path.Combine(IO.SafetensorsTests.TempDir(), "adapter");
        pm.Save(dir);
        return dir;
    }

    [Fact]
    public void Json_lists_every_target_with_the_librarys_counts()
    {
        var r = CliRun.Run("analyze", "--model", CliRun.TinyCode, "--adapter", adapter.Value, "--json", "--top-k", "8");
        Assert.True(r.Code == 0, r.Err);
        using var doc = JsonDocument.Parse(r.Out);
        var layers = doc.RootElement.GetProperty("layers").EnumerateArray().ToList();
        Assert.Equal(12, layers.Count);                                      // 6 layers x (q_proj, v_proj)
        Assert.Equal("model.layers.0.self_attn.q_proj", layers[0].GetProperty("module").GetString());
        Assert.Equal("model.layers.5.self_attn.v_proj", layers[^1].GetProperty("module").GetString());
        var expected = IntruderAnalysis.AnalyzeAdapter(CliRun.TinyCode, adapter.Value, new IntruderOptions(TopK: 8));
        int total = 0;
        for (int i = 0; i < layers.Count; i++)
        {
            var l = layers[i];
            Assert.Equal(expected[i].IntruderCount, l.GetProperty("intruders").GetInt32());
            Assert.Equal(expected[i].IntruderCount, l.GetProperty("intruder_indices").GetArrayLength());
            Assert.Equal(8, l.GetProperty("cosines").GetArrayLength());
            Assert.Equal(expected[i].DeltaEffectiveRank, l.GetProperty("effective_rank").GetDouble(), 9);
            Assert.InRange(l.GetProperty("effective_rank").GetDouble(), 1, 4);  // dW has rank 4
            total += l.GetProperty("intruders").GetInt32();
        }
        Assert.Equal(total, doc.RootElement.GetProperty("total_intruders").GetInt32());
        Assert.True(total > 0, "the random adapter should bring intruders");
        Assert.Equal(8, doc.RootElement.GetProperty("top_k").GetInt32());
        Assert.Equal(0.5, doc.RootElement.GetProperty("epsilon").GetDouble());
    }

    [Fact]
    public void Reduce_intruders_writes_a_PEFT_adapter_and_lambda_one_keeps_the_delta()
    {
        using var scope = NewDisposeScope();
        var root = IO.SafetensorsTests.TempDir();
        var one = Path.Combine(root, "lambda1");
        var r = CliRun.Run("analyze", "--model", CliRun.TinyCode, "--adapter", adapter.Value, "--reduce-intruders", "1", "--out", one);
        Assert.True(r.Code == 0, r.Err);
        Assert.Contains("total intruders:", r.Out);
        Assert.Equal(File.ReadAllText(Path.Combine(adapter.Value, "adapter_config.json")), File.ReadAllText(Path.Combine(one, "adapter_config.json")));
        using var ckpt = Checkpoint.Open(CliRun.TinyCode);
        using (var before = AdapterDelta.Open(adapter.Value))
        using (var after = AdapterDelta.Open(one))
            foreach (var module in before.LoraModules)
            {
                var w0 = ckpt.Load(module + ".weight");
                Numerics.Close(before.Delta(module + ".weight", w0)!, after.Delta(module + ".weight", w0)!, 1e-4, module);
            }

        var reduced = Path.Combine(root, "lambda075");
        r = CliRun.Run("analyze", "--model", CliRun.TinyCode, "--adapter", adapter.Value, "--reduce-intruders", "0.75", "--out", reduced, "--json");
        Assert.True(r.Code == 0, r.Err);
        using var doc = JsonDocument.Parse(r.Out);
        using var original = SafetensorsFile.Open(Path.Combine(adapter.Value, "adapter_model.safetensors"));
        using var written = SafetensorsFile.Open(Path.Combine(reduced, "adapter_model.safetensors"));
        Assert.Equal(original.Names.Order(), written.Names.Order());
        foreach (var layer in doc.RootElement.GetProperty("layers").EnumerateArray())
        {
            var key = $"base_model.model.{layer.GetProperty("module").GetString()}.lora_B.weight";
            Assert.Equal(original.Info(key).Shape, written.Info(key).Shape);
            bool same = Numerics.Same(original.Load(key), written.Load(key));
            Assert.True(same == (layer.GetProperty("intruders").GetInt32() == 0), $"{key}: changed iff it has intruders");
        }
    }

    [Fact]
    public void Tuned_compares_every_changed_matrix_and_plot_writes_a_png()
    {
        using var scope = NewDisposeScope();
        var tuned = Path.Combine(IO.SafetensorsTests.TempDir(), "tuned");
        Directory.CreateDirectory(tuned);
        File.Copy(Path.Combine(CliRun.TinyCode, "config.json"), Path.Combine(tuned, "config.json"));
        using (var ckpt = Checkpoint.Open(CliRun.TinyCode))
        {
            var tensors = ckpt.LoadAll();
            const string name = "model.layers.1.mlp.down_proj.weight";
            var g = new Generator(1);
            tensors[name] = (tensors[name].to(ScalarType.Float32) + 5 * randn(192, 1, generator: g).matmul(randn(1, 512, generator: g)) / 20).to(tensors[name].dtype);
            SafetensorsWriter.Save(Path.Combine(tuned, "model.safetensors"), tensors);
        }
        var png = Path.Combine(tuned, "..", "spectra.png");
        var r = CliRun.Run("analyze", "--model", CliRun.TinyCode, "--tuned", tuned, "--json", "--plot", png);
        Assert.True(r.Code == 0, r.Err);
        using var doc = JsonDocument.Parse(r.Out);
        var layer = Assert.Single(doc.RootElement.GetProperty("layers").EnumerateArray());
        Assert.Equal("model.layers.1.mlp.down_proj", layer.GetProperty("module").GetString());
        Assert.Equal(1, layer.GetProperty("intruders").GetInt32());           // a rank-1 change in a random direction
        Assert.Equal([0x89, (byte)'P', (byte)'N', (byte)'G'], File.ReadAllBytes(png)[..4]);
        var again = CliRun.Run("analyze", "--model", CliRun.TinyCode, "--tuned", tuned, "--json", "--plot", png);
        Assert.True(again.Code == 0, "a second run replaces the picture: " + again.Err);
    }

    [Fact]
    public void Bad_combinations_fail_with_one_line_naming_the_options()
    {
        CliRun.Run("analyze", "--model", CliRun.TinyCode, "--adapter", CliRun.Nowhere, "--tuned", CliRun.Nowhere).AssertError("--adapter", "--tuned");
        CliRun.Run("analyze", "--model", CliRun.TinyCode, "--adapter", CliRun.Nowhere, "--reduce-intruders", "0.75").AssertError("--out");
        CliRun.Run("analyze", "--model", CliRun.TinyCode, "--adapter", CliRun.Nowhere).AssertError("--adapter", CliRun.Nowhere);
        CliRun.Run("analyze", "--model", CliRun.TinyCode, "--adapter", CliRun.Nowhere, "--epsilon", "2").AssertError("--epsilon");
    }
}
