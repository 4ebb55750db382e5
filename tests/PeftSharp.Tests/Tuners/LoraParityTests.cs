using PeftSharp.IO;
using PeftSharp.Peft;
using PeftSharp.Tuners;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tuners;

public class LoraParityTests
{
    public static readonly string[] Fixtures = ["llama-lora-qv", "llama-lora-alllinear-rslora", "llama-dora", "gpt2-lora-conv1d", "bert-cls-lora"];
    public static TheoryData<string> Cases => new(Fixtures);

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
}
