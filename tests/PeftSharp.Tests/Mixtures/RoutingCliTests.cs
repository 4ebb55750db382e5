using System.Text.Json;
using PeftSharp.Analysis;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tests.Cli;
using PeftSharp.Tuners;
using PeftSharp.Tuners.Lora;
using PeftSharp.Tuners.MixLora;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Mixtures;

/// <summary><c>peftsharp analyze --routing</c> on tinycode-3m with a fresh MixLoRA adapter (4 experts, top-2).</summary>
public sealed class RoutingCliTests
{
    static readonly Lazy<(string Adapter, string Data)> inputs = new(Make);

    static (string, string) Make()
    {
        using var scope = NewDisposeScope();
        random.manual_seed(3);
        var pm = PeftModel.Create(AutoModel.Load(CliRun.TinyCode),
            new MixLoraConfig { R = 4, NumExperts = 4, TopK = 2, RouterInitRange = 1.0, TargetModules = ModuleSelector.Of("gate_proj", "up_proj", "down_proj") });
        var dir = IO.SafetensorsTests.TempDir();
        pm.Save(Path.Combine(dir, "adapter"));
        var data = Path.Combine(dir, "data.jsonl");
        File.WriteAllLines(data, File.ReadLines(Repo.Path("data", "first-run", "eval.jsonl")).Take(3));
        return (Path.Combine(dir, "adapter"), data);
    }

    [Fact]
    public void Json_gives_each_layers_top_k_usage_as_the_library_tallies_it()
    {
        var (adapter, data) = inputs.Value;
        var r = CliRun.Run("analyze", "--model", CliRun.TinyCode, "--adapter", adapter, "--routing", data, "--json");
        Assert.True(r.Code == 0, r.Err);
        var layers = JsonDocument.Parse(r.Out).RootElement.EnumerateArray().ToList();
        var expected = RoutingAnalysis.Run(CliRun.TinyCode, adapter, data);
        Assert.Equal(6, layers.Count);                                     // one router per decoder layer's feed-forward block
        for (int i = 0; i < layers.Count; i++)
        {
            var l = layers[i];
            Assert.Equal(expected[i].Module, l.GetProperty("module").GetString());
            Assert.Equal(4, l.GetProperty("experts").GetInt32());
            Assert.True(l.GetProperty("decisions").GetInt64() > 100, "every token of the three records is routed");
            var picks = l.GetProperty("pick_share").EnumerateArray().Select(e => e.GetDouble()).ToArray();
            var weights = l.GetProperty("mean_weight").EnumerateArray().Select(e => e.GetDouble()).ToArray();
            // top-2 routing: every token picks exactly two experts, and its two renormalised weights sum to 1.
            Assert.Equal(2.0, picks.Sum(), 9);
            Assert.Equal(1.0, weights.Sum(), 5);
            Assert.Equal(expected[i].PickShare, picks, (a, b) => Math.Abs(a - b) < 1e-12);
        }
    }

    [Fact]
    public void An_adapter_that_routes_nothing_is_refused_by_name()
    {
        var (_, data) = inputs.Value;
        string lora;
        using (NewDisposeScope())
        {
            var pm = PeftModel.Create(AutoModel.Load(CliRun.TinyCode), new LoraConfig { R = 2, TargetModules = ["q_proj"] });
            lora = Path.Combine(IO.SafetensorsTests.TempDir(), "lora");
            pm.Save(lora);
        }
        var r = CliRun.Run("analyze", "--model", CliRun.TinyCode, "--adapter", lora, "--routing", data);
        Assert.Equal(1, r.Code);
        Assert.Contains("routes nothing", r.Err);
        Assert.Contains("LORA", r.Err);
    }
}
