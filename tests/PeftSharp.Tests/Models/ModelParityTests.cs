using PeftSharp.IO;
using PeftSharp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Models;

public class ModelParityTests
{
    [Theory]
    [InlineData("tiny-llama")]
    [InlineData("tiny-llama-sharded")]
    [InlineData("tiny-gpt2")]
    [InlineData("tiny-bert-cls")]
    public void Logits_match_transformers(string name)
    {
        using var scope = NewDisposeScope();
        var model = AutoModel.Load(Repo.Fixture("models", name));
        var folder = name == "tiny-llama-sharded" ? "tiny-llama" : name;
        using var inputs = SafetensorsFile.Open(Repo.Fixture("models", folder, "inputs.safetensors"));
        using var expected = SafetensorsFile.Open(Repo.Fixture("models", folder, "expected.safetensors"));
        using var _ = no_grad();
        var logits = model.Forward(ModelInputs.Ids(inputs.Load("input_ids"), inputs.Load("attention_mask")));
        Numerics.Close(expected.Load("logits"), logits, 1e-4, name);
    }

    [Fact]
    public void Tinycode_probe_loss_matches_pytorch()
    {
        using var scope = NewDisposeScope();
        var model = AutoModel.Load(Repo.Path("models", "tinycode-3m"));
        using var probe = SafetensorsFile.Open(Repo.Path("models", "tinycode-3m", "probe_inputs.safetensors"));
        var ids = probe.Load(probe.Names.First());
        using var _ = no_grad();
        var loss = Losses.CausalLM(model.Forward(ModelInputs.Ids(ids)), ids).item<float>();
        Assert.InRange(loss, 1.665434 - 1e-3, 1.665434 + 1e-3);
    }
}
