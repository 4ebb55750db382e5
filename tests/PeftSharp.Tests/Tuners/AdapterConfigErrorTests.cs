using System.Text.Json.Nodes;
using PeftSharp.Models;
using PeftSharp.Peft;

namespace PeftSharp.Tests.Tuners;

/// <summary>
/// A PEFT adapter whose adapter_config.json the model cannot take is refused with the file named and the reason the
/// file gives (not a JSON conversion message, not "matched no module" when the layer list is at fault).
/// </summary>
public class AdapterConfigErrorTests
{
    [Theory]
    [InlineData("""{"peft_type": 7}""", "\"peft_type\" must be a string")]
    [InlineData("""{"r": 0}""", "rank must be positive")]
    [InlineData("""{"r": -3}""", "rank must be positive")]
    [InlineData("""{"target_modules": "(["}""", "target_modules \"([\" is not a valid regular expression")]
    [InlineData("""{"exclude_modules": "a)"}""", "exclude_modules \"a)\" is not a valid regular expression")]
    [InlineData("""{"layers_to_transform": [99]}""", "layers_to_transform [99] names layer(s) 99")]
    [InlineData("""{"target_modules": ["nonexistent_proj"]}""", "matched no module")]
    public void A_bad_adapter_config_is_refused_naming_the_file_and_the_reason(string change, string reason)
    {
        using var dir = new TempDir();
        var adapter = dir.Combine("adapter");
        Directory.CreateDirectory(adapter);
        var source = Repo.Fixture("adapters", "llama-lora-qv");
        File.Copy(Path.Combine(source, "adapter_model.safetensors"), Path.Combine(adapter, "adapter_model.safetensors"));
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(source, "adapter_config.json")))!.AsObject();
        foreach (var (key, value) in JsonNode.Parse(change)!.AsObject()) config[key] = value?.DeepClone();
        File.WriteAllText(Path.Combine(adapter, "adapter_config.json"), config.ToJsonString());

        using var model = AutoModel.Load(Repo.Fixture("models", "tiny-llama"));
        var e = Assert.ThrowsAny<Exception>(() => PeftModel.FromPretrained(model, adapter));
        Assert.Contains(Path.Combine(adapter, "adapter_config.json"), e.Message);
        Assert.Contains(reason, e.Message);
    }
}
