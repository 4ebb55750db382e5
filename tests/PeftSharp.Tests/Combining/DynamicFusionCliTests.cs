using System.Text.Json;
using PeftSharp.Generation;
using PeftSharp.Generation.Composition;
using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tests.Cli;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Combining;

/// <summary><c>logits</c> and <c>generate</c> with several <c>--proxy-adapter</c> experts, fixed or with <c>--dynamic-fusion</c>.</summary>
public class DynamicFusionCliTests
{
    static readonly string Dir = Path.Combine(Path.GetTempPath(), "peftsharp-tests", "fusion-cli-" + Guid.NewGuid().ToString("N"));
    static readonly string[] Adapters = SaveExperts();
    static readonly PretrainedModel Large = AutoModel.Load(CliRun.TinyCode);
    static readonly PeftModel Small = LoadExperts();

    static DynamicFusionCliTests() { }

    static string[] SaveExperts()
    {
        var dirs = new[] { Path.Combine(Dir, "a"), Path.Combine(Dir, "b") };
        LogitMixTests.RandomLora(seed: 7).Save(dirs[0]);
        LogitMixTests.RandomLora(seed: 8).Save(dirs[1]);
        return dirs;
    }

    static PeftModel LoadExperts()
    {
        var pm = PeftModel.FromPretrained(AutoModel.Load(CliRun.TinyCode), Adapters[0], "a");
        pm.LoadAdapter(Adapters[1], "b");
        return pm;
    }

    static ILanguageModel[] Experts => [new AdapterView(Small, "a"), new AdapterView(Small, "b")];

    static readonly Tensor Ids = randint(2, 4096, [2, 5], dtype: ScalarType.Int64, generator: new Generator(3));

    static string[] TwoExperts => ["--proxy-base", CliRun.TinyCode, "--proxy-adapter", Adapters[0], "--proxy-adapter", Adapters[1]];

    static Dictionary<string, Tensor> RunLogits(params string[] extra)
    {
        Directory.CreateDirectory(Dir);
        var inputs = Path.Combine(Dir, Guid.NewGuid().ToString("N") + "-in.safetensors");
        SafetensorsWriter.Save(inputs, new Dictionary<string, Tensor> { ["input_ids"] = Ids });
        var output = Path.Combine(Dir, Guid.NewGuid().ToString("N") + ".safetensors");
        var r = CliRun.Run(["logits", "--model", CliRun.TinyCode, "--inputs", inputs, "--out", output, .. extra]);
        Assert.True(r.Code == 0, r.Err);
        using var file = SafetensorsFile.Open(output);
        return file.Names.ToDictionary(n => n, n => file.Load(n).MoveToOuterDisposeScope());
    }

    static double MaxDiff(Tensor a, Tensor b) => (a - b).abs().max().item<float>();

    [Fact]
    public void Logits_with_dynamic_fusion_are_the_library_fusion_and_write_its_weights()
    {
        using var scope = NewDisposeScope();
        var got = RunLogits([.. TwoExperts, "--dynamic-fusion", "--fusion-grid", "0:1.5:0.25"]);
        var fusion = new DynamicLogitFusion(Large, new AdaptersOff(Small), Experts, new FusionGrid(0, 1.5, 0.25));
        Tensor? weights = null;
        fusion.Observer = w => weights = w.to(ScalarType.Float32).MoveToOuterDisposeScope();
        using var _ = no_grad();
        Assert.True(MaxDiff(got["logits"], fusion.Forward(ModelInputs.Ids(Ids))) < 1e-5);
        Assert.Equal(new long[] { 2, 5, 2 }, got["fusion_weights"].shape);
        Assert.Equal(0, MaxDiff(got["fusion_weights"], weights!));
    }

    [Fact]
    public void Two_experts_with_a_fixed_beta_each_add_their_difference()
    {
        using var scope = NewDisposeScope();
        var got = RunLogits([.. TwoExperts, "--beta", "0.6"]);
        Assert.False(got.ContainsKey("fusion_weights"));
        using var _ = no_grad();
        var inputs = ModelInputs.Ids(Ids);
        var small = new AdaptersOff(Small).Forward(inputs);
        var expected = Large.Forward(inputs) + 0.6 * (Experts[0].Forward(inputs) - small) + 0.6 * (Experts[1].Forward(inputs) - small);
        Assert.True(MaxDiff(got["logits"], expected) < 1e-4);
    }

    [Fact]
    public void Separate_tuned_experts_equal_to_the_small_base_get_no_weight()
    {
        using var scope = NewDisposeScope();
        var got = RunLogits("--proxy-base", CliRun.TinyCode, "--proxy-tuned", CliRun.TinyCode, "--proxy-tuned", CliRun.TinyCode, "--dynamic-fusion");
        Assert.Equal(0, got["fusion_weights"].abs().max().item<float>());
        using var _ = no_grad();
        Assert.Equal(0, MaxDiff(got["logits"], Large.Forward(ModelInputs.Ids(Ids))));
    }

    [Fact]
    public void Generate_reports_each_tokens_weights()
    {
        var r = CliRun.Run(["generate", "--model", CliRun.TinyCode, .. TwoExperts, "--dynamic-fusion", "--fusion-search", "joint", "--fusion-grid", "0:2:0.5",
            "--prompt-ids", "0,17,230,5", "--max-new-tokens", "6", "--json"]);
        Assert.True(r.Code == 0, r.Err);
        var root = JsonDocument.Parse(r.Out).RootElement;
        var ids = root.GetProperty("ids").EnumerateArray().Select(x => x.GetInt32()).ToArray();
        var weights = root.GetProperty("fusion_weights").EnumerateArray().Select(s => s.EnumerateArray().Select(x => x.GetDouble()).ToArray()).ToArray();
        var fusion = new DynamicLogitFusion(Large, new AdaptersOff(Small), Experts, new FusionGrid(0, 2, 0.5, FusionSearch.Joint));
        var expected = new List<double[]>();
        fusion.Observer = w => expected.Add([w[0, -1, 0].item<double>(), w[0, -1, 1].item<double>()]);
        var eos = ModelConfig.Load(CliRun.TinyCode).EosTokenIds;
        Assert.Equal(TextGenerator.Generate(fusion, [[0, 17, 230, 5]], new GenerationOptions { MaxNewTokens = 6, EosTokenIds = eos })[0], ids);
        Assert.Equal(ids.Length - 4, weights.Length);
        Assert.Equal(expected.Take(weights.Length), weights);
    }

    [Theory]
    [InlineData("--beta", "0.5", "--beta", "--dynamic-fusion")]
    [InlineData("--eft", null, "--eft", "--dynamic-fusion")]
    [InlineData("--fusion-grid", "0:2:0", "--fusion-grid 0:2:0", "STEP > 0")]
    [InlineData("--fusion-grid", "0:2", "--fusion-grid 0:2", "MIN:MAX:STEP")]
    [InlineData("--fusion-search", "all", "--fusion-search all", "joint")]
    public void Bad_fusion_options_are_refused_before_the_weights_load(string option, string? value, string says, string says2)
    {
        string[] extra = value is null ? [option] : [option, value];
        CliRun.Run(["generate", "--prompt-ids", "0,1", .. TwoExperts, "--dynamic-fusion", .. extra]).AssertError(says, says2);
    }

    [Fact]
    public void Fusion_options_need_dynamic_fusion_and_a_proxy_base()
    {
        CliRun.Run(["generate", "--prompt-ids", "0,1", .. TwoExperts, "--fusion-grid", "0:1:0.1"]).AssertError("--fusion-grid", "--dynamic-fusion");
        CliRun.Run("generate", "--prompt-ids", "0,1", "--dynamic-fusion").AssertError("--dynamic-fusion", "--proxy-base");
    }

    [Fact]
    public void An_adapter_folder_that_is_a_model_is_refused_by_name()
    {
        CliRun.Run("generate", "--prompt-ids", "0,1", "--proxy-base", CliRun.TinyCode, "--proxy-adapter", CliRun.TinyCode, "--dynamic-fusion")
            .AssertError(CliRun.TinyCode, "adapter_config.json", "--proxy-tuned");
    }
}
