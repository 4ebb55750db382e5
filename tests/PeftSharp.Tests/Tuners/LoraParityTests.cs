using PeftSharp.IO;
using PeftSharp.Peft;
using PeftSharp.Tuners;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tuners;

public class LoraParityTests
{
    public static TheoryData<string> Cases => new() { "llama-lora-qv", "llama-lora-alllinear-rslora", "llama-dora", "gpt2-lora-conv1d", "bert-cls-lora" };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Logits_match_peft(string name)
    {
        using var scope = NewDisposeScope();
        var f = new AdapterFixture(name);
        var pm = f.LoadPeft();
        using var _ = no_grad();
        Numerics.Close(f.Expected("logits"), pm.Forward(f.Inputs()), 1e-4, name);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Merged_logits_match_peft(string name)
    {
        using var scope = NewDisposeScope();
        var f = new AdapterFixture(name);
        var merged = f.LoadPeft().MergeAndUnload(safeMerge: true);
        using var _ = no_grad();
        Numerics.Close(f.Expected("merged_logits"), merged.Forward(f.Inputs()), 1e-4, name);
        var mergedFile = Path.Combine(f.Folder, "merged_model.safetensors");
        if (!File.Exists(mergedFile)) return;
        using var expected = SafetensorsFile.Open(mergedFile);
        var ours = merged.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var key in expected.Names)
            Numerics.Close(expected.Load(key), ours[key], 1e-5, key);
    }

    [Fact]
    public void Disabling_adapters_gives_the_base_logits()
    {
        using var scope = NewDisposeScope();
        var f = new AdapterFixture("llama-lora-qv");
        var pm = f.LoadPeft();
        using var _ = no_grad();
        Tensor disabled;
        using (pm.DisableAdapters()) disabled = pm.Forward(f.Inputs());
        using var expected = SafetensorsFile.Open(Repo.Fixture("models", "tiny-llama", "expected.safetensors"));
        Numerics.Close(expected.Load("logits"), disabled, 1e-4);
        Assert.True(Numerics.MaxAbsDiff(disabled, f.Expected("logits")) > 1e-2, "the adapter must change the logits for this test to mean anything");
        Numerics.Close(f.Expected("logits"), pm.Forward(f.Inputs()), 1e-4, "re-enabled");
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Saved_adapter_loads_back_identically(string name)
    {
        using var scope = NewDisposeScope();
        var f = new AdapterFixture(name);
        var pm = f.LoadPeft();
        var dir = Path.Combine(IO.SafetensorsTests.TempDir(), "adapter");
        pm.Save(dir);
        using (var orig = SafetensorsFile.Open(Path.Combine(f.Folder, PeftModel.WeightsFile)))
        using (var ours = SafetensorsFile.Open(Path.Combine(dir, PeftModel.WeightsFile)))
        {
            Assert.Equal(orig.Names.Order(), ours.Names.Order());
            foreach (var n in orig.Names) Assert.True(Numerics.Same(orig.Load(n), ours.Load(n)), n);
        }
        var back = PeftModel.FromPretrained(f.LoadBase(), dir);
        using var _ = no_grad();
        Numerics.Close(f.Expected("logits"), back.Forward(f.Inputs()), 1e-4);
        // Every key PEFT wrote is in ours with the same value, so PEFT 0.21 can load it.
        var peftCfg = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(f.Folder, PeftConfigJson.FileName)))!.AsObject();
        var ourCfg = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(dir, PeftConfigJson.FileName)))!.AsObject();
        foreach (var key in new[] { "peft_type", "r", "lora_alpha", "use_rslora", "use_dora", "fan_in_fan_out", "bias", "task_type", "modules_to_save" })
            Assert.Equal(peftCfg[key]?.ToJsonString(), ourCfg[key]?.ToJsonString());
    }
}
