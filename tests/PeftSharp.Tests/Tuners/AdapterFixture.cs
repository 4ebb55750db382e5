using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Peft;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tuners;

/// <summary>One folder of tests/fixtures/peft-reference/adapters: its base model, inputs and expected outputs.</summary>
internal sealed class AdapterFixture
{
    public string Name { get; }
    public string Folder => Repo.Fixture("adapters", Name);
    public string BaseFolder => Repo.Fixture("models", Name.StartsWith("gpt2") ? "tiny-gpt2" : Name.StartsWith("bert") ? "tiny-bert-cls" : "tiny-llama");

    public AdapterFixture(string name) => Name = name;

    public PretrainedModel LoadBase() => AutoModel.Load(BaseFolder);

    public PeftModel LoadPeft() => PeftModel.FromPretrained(LoadBase(), Folder);

    public ModelInputs Inputs()
    {
        using var f = SafetensorsFile.Open(Path.Combine(Folder, "inputs.safetensors"));
        return ModelInputs.Ids(f.Load("input_ids"), f.Load("attention_mask"));
    }

    public Tensor Expected(string key)
    {
        using var f = SafetensorsFile.Open(Path.Combine(Folder, "expected.safetensors"));
        return f.Load(key);
    }

    public bool Has(string key)
    {
        using var f = SafetensorsFile.Open(Path.Combine(Folder, "expected.safetensors"));
        return f.Contains(key);
    }
}
