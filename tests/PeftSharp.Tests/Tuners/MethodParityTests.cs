using PeftSharp.IO;
using Xunit.Abstractions;
using PeftSharp.Peft;
using PeftSharp.Tuners;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tuners;

/// <summary>Layer methods against their PEFT 0.21 fixtures: logits, merged logits, save/load, merge/unmerge (LoRA's own checks are in LoraParityTests).</summary>
public class MethodParityTests(ITestOutputHelper output)
{
    /// <summary>The fixtures of the method table's rows, LoRA's aside.</summary>
    public static readonly string[] Fixtures = Contract.MethodCases.All.Select(c => c.Fixture).OfType<string>().Except(LoraParityTests.Fixtures).ToArray();
    public static TheoryData<string> Cases => new(Fixtures);

    /// <summary>These and LoRA's fixtures: the checks every layer method shares.</summary>
    public static TheoryData<string> AllCases => new([.. LoraParityTests.Fixtures, .. Fixtures]);

    [Theory]
    [MemberData(nameof(Cases))]
    public void Logits_match_peft(string name)
    {
        using var scope = NewDisposeScope();
        var f = new AdapterFixture(name);
        var pm = f.LoadPeft();
        using var _ = no_grad();
        var logits = pm.Forward(f.Inputs());
        output.WriteLine($"{name} logits max abs diff {Numerics.MaxAbsDiff(f.Expected("logits"), logits):g3}");
        Numerics.Close(f.Expected("logits"), logits, 1e-4, name);
        using var baseExpected = SafetensorsFile.Open(Repo.Fixture("models", "tiny-llama", "expected.safetensors"));
        Assert.True(Numerics.MaxAbsDiff(baseExpected.Load("logits"), logits) > 1e-2, "the adapter must change the logits for this test to mean anything");
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Every_key_of_the_peft_config_is_known(string name)
    {
        var config = PeftConfigJson.Load(Path.Combine(new AdapterFixture(name).Folder, PeftConfigJson.FileName));
        var tuner = TunerRegistry.For(config);
        var unknown = (config.Extra?.Keys.ToList() ?? []).Where(k => k != "peft_type" && !tuner.KnownUnusedKeys.Contains(k) && !tuner.UnsupportedKeys.Contains(k)).ToList();
        Assert.True(unknown.Count == 0, $"{name}: keys that would be warned about: {string.Join(", ", unknown)}");
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Merged_logits_match_peft(string name)
    {
        using var scope = NewDisposeScope();
        var f = new AdapterFixture(name);
        var merged = f.LoadPeft().MergeAndUnload(safeMerge: true);
        using var _ = no_grad();
        var logits = merged.Forward(f.Inputs());
        output.WriteLine($"{name} merged_logits max abs diff {Numerics.MaxAbsDiff(f.Expected("merged_logits"), logits):g3}");
        Numerics.Close(f.Expected("merged_logits"), logits, 1e-4, name);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Merging_in_place_keeps_the_logits_and_unmerging_restores_the_weights(string name)
    {
        using var scope = NewDisposeScope();
        var f = new AdapterFixture(name);
        var pm = f.LoadPeft();
        using var _ = no_grad();
        var before = pm.Base.named_parameters().ToDictionary(p => p.name, p => p.parameter.clone());
        var unmerged = pm.Forward(f.Inputs());
        pm.MergeAdapter(safeMerge: true);
        Assert.True(pm.TunerLayers().All(l => l.Layer.MergedAdapters.Count == 1));
        Numerics.Close(unmerged, pm.Forward(f.Inputs()), 1e-4, "merged");
        pm.UnmergeAdapter();
        foreach (var (n, p) in pm.Base.named_parameters()) Numerics.Close(before[n], p, 1e-6, n);
        Numerics.Close(unmerged, pm.Forward(f.Inputs()), 1e-5, "unmerged");
    }

    [Theory]
    [MemberData(nameof(AllCases))]
        public void Disabling_adapters_gives_the_base_logits(string name)
    {
        using var scope = NewDisposeScope();
        var f = new AdapterFixture(name);
        var pm = f.LoadPeft();
        using var _ = no_grad();
        Tensor disabled;
        using (pm.DisableAdapters()) disabled = pm.Forward(f.Inputs());
        using var expected = SafetensorsFile.Open(Path.Combine(f.BaseFolder, "expected.safetensors"));
        Numerics.Close(expected.Load("logits"), disabled, 1e-4);
        Assert.True(Numerics.MaxAbsDiff(disabled, f.Expected("logits")) > 1e-3, "the adapter must change the logits for this test to mean anything");
        Numerics.Close(f.Expected("logits"), pm.Forward(f.Inputs()), 1e-4, "re-enabled");
    }

    [Theory]
    [MemberData(nameof(AllCases))]
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
        // Every key PEFT wrote is written back with the same value, so PEFT 0.21 reads our config as it wrote it.
        var peftCfg = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(f.Folder, PeftConfigJson.FileName)))!.AsObject();
        var ourCfg = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(dir, PeftConfigJson.FileName)))!.AsObject();
        foreach (var (key, value) in peftCfg)
        {
            if (key is "peft_version") continue;
            Assert.True(ourCfg.ContainsKey(key), $"our adapter_config.json lacks '{key}'");
            Assert.True(System.Text.Json.Nodes.JsonNode.DeepEquals(value, ourCfg[key]), $"{key}: PEFT {value?.ToJsonString()} ours {ourCfg[key]?.ToJsonString()}");
        }
        var back = PeftModel.FromPretrained(f.LoadBase(), dir);
        using var _ = no_grad();
        Numerics.Close(f.Expected("logits"), back.Forward(f.Inputs()), 1e-4);
    }
}
