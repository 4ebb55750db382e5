using System.Text.Json;
using PeftSharp.Generation;
using PeftSharp.Generation.Composition;
using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tests.Cli;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Combining;

/// <summary><c>logits</c> and <c>generate</c> with <c>--proxy-base</c>: the same numbers as the library's <see cref="LogitMix"/>.</summary>
public class ProxyCliTests
{
    static readonly string Dir = Path.Combine(Path.GetTempPath(), "peftsharp-tests", "proxy-" + Guid.NewGuid().ToString("N"));
    static readonly PeftModel Small = SavedLora();
    static readonly PretrainedModel Large = AutoModel.Load(CliRun.TinyCode);

    // An explicit static constructor runs before xunit builds the instance, so the models never load inside a test's
    // dispose scope (which would free their weights when that test ends).
    static ProxyCliTests() { }

    static PeftModel SavedLora()
    {
        var pm = LogitMixTests.RandomLora();
        pm.Save(Path.Combine(Dir, "adapter"));
        return pm;
    }

    static readonly string Adapter = Path.Combine(Dir, "adapter");

    static (string Inputs, Tensor Ids) WriteInputs()
    {
        var ids = randint(2, 4096, [2, 7], dtype: ScalarType.Int64, generator: new Generator(4));
        var path = Path.Combine(Dir, "inputs.safetensors");
        SafetensorsWriter.Save(path, new Dictionary<string, Tensor> { ["input_ids"] = ids });
        return (path, ids);
    }

    static Tensor RunLogits(params string[] extra)
    {
        var (inputs, _) = WriteInputs();
        var output = Path.Combine(Dir, Guid.NewGuid().ToString("N") + ".safetensors");
        var r = CliRun.Run(["logits", "--model", CliRun.TinyCode, "--inputs", inputs, "--out", output, .. extra]);
        Assert.True(r.Code == 0, r.Err);
        using var file = SafetensorsFile.Open(output);
        return file.Load("logits");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Logits_with_a_proxy_adapter_are_the_library_mix(bool eft)
    {
        using var scope = NewDisposeScope();
        var got = RunLogits(["--proxy-base", CliRun.TinyCode, "--proxy-adapter", Adapter, "--beta", "0.7", .. eft ? new[] { "--eft" } : []]);
        var mix = new LogitMix(Large, [new ExpertDelta(Small, new AdaptersOff(Small), 0.7)], eft ? MixSpace.LogProbs : MixSpace.Logits);
        using var _ = no_grad();
        var expected = mix.Forward(ModelInputs.Ids(WriteInputs().Ids));
        Assert.True((got - expected).abs().max().item<float>() < 1e-5);
    }

    [Fact]
    public void A_separate_tuned_model_equal_to_the_base_leaves_the_large_model()
    {
        using var scope = NewDisposeScope();
        var got = RunLogits("--proxy-base", CliRun.TinyCode, "--proxy-tuned", CliRun.TinyCode, "--beta", "2");
        using var _ = no_grad();
        Assert.Equal(0, (got - Large.Forward(ModelInputs.Ids(WriteInputs().Ids))).abs().max().item<float>());
    }

    [Fact]
    public void Generate_with_a_proxy_adapter_decodes_the_mix()
    {
        var r = CliRun.Run("generate", "--model", CliRun.TinyCode, "--proxy-base", CliRun.TinyCode, "--proxy-adapter", Adapter,
            "--beta", "1.5", "--prompt-ids", "0,17,230,5", "--max-new-tokens", "8", "--json");
        Assert.True(r.Code == 0, r.Err);
        var ids = JsonDocument.Parse(r.Out).RootElement.GetProperty("ids").EnumerateArray().Select(x => x.GetInt32()).ToArray();
        var eos = ModelConfig.Load(CliRun.TinyCode).EosTokenIds;
        var mix = LogitMix.ProxyTuning(Large, Small, new AdaptersOff(Small), 1.5);
        Assert.Equal(TextGenerator.Generate(mix, [[0, 17, 230, 5]], new GenerationOptions { MaxNewTokens = 8, EosTokenIds = eos })[0], ids);
    }

    [Fact]
    public void A_vocabulary_mismatch_names_both_folders_and_sizes()
    {
        var tiny = Repo.Fixture("models", "tiny-llama");
        CliRun.Run("logits", "--model", CliRun.TinyCode, "--inputs", CliRun.Nowhere, "--out", CliRun.Nowhere, "--proxy-base", tiny, "--proxy-adapter", Adapter)
            .AssertError(tiny, CliRun.TinyCode, "512", "4096");
    }

    [Theory]
    [InlineData("--beta", "0.5")]
    [InlineData("--proxy-adapter", "x")]
    public void Proxy_options_without_a_proxy_base_are_refused(string option, string value)
    {
        CliRun.Run("generate", "--prompt-ids", "0,1", option, value).AssertError(option, "--proxy-base");
    }

    [Fact]
    public void A_proxy_base_needs_a_tuned_source()
    {
        CliRun.Run("generate", "--prompt-ids", "0,1", "--proxy-base", CliRun.TinyCode).AssertError("--proxy-adapter", "--proxy-tuned");
    }
}
