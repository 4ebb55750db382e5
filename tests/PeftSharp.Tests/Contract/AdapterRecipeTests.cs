using System.Text.Json.Nodes;
using PeftSharp.Models;
using PeftSharp.Training;
using PeftSharp.Tuners;
using PeftSharp.Tuners.LoHa;
using PeftSharp.Tuners.Lora;
using PeftSharp.Tuners.Vera;

namespace PeftSharp.Tests.Contract;

/// <summary>
/// How a training run gets its adapter config: <c>--method</c> presets from the methods' folders, or any
/// adapter_config.json (<c>--adapter-config</c>); and the PEFT keys that are refused because we do not implement them.
/// </summary>
public class AdapterRecipeTests
{
    static ModelConfig Tiny() => AutoModel.Load(Repo.Fixture("models", "tiny-llama")).Config;

    static string Write(string json)
    {
        var path = Path.Combine(IO.SafetensorsTests.TempDir(), "adapter_config.json");
        File.WriteAllText(path, json);
        return path;
    }

    [Fact]
    public void Method_names_are_the_presets_of_the_registered_methods_in_order()
    {
        Assert.Equal(["lora", "dora", "rslora", "pissa", "olora", "lora-orthogonal", "eva", "corda", "corda-kpm", "lora-ga", "ia3", "loha", "lokr", "vera", "adalora", "miss", "bone",
            "prompt_tuning", "prefix_tuning", "p_tuning", "ln_tuning", "bottleneck", "parallel_adapter", "ssf", "bitfit", "loldu", "hydra", "increlora",
            "random-mask", "magnitude", "spiel", "lt-sft", "lift", "sara", "s2ft", "graft", "shira", "dsee", "poly", "mhr", "mixlora", "meteora"], Methods.Names);
        var dora = Assert.IsType<LoraConfig>(Methods.ConfigFor(new TrainingOptions { Method = "dora", LoraR = 4 }, Tiny(), 10));
        Assert.True(dora.UseDora);
        Assert.Equal(4, dora.R);
        var e = Assert.Throws<ArgumentException>(() => Methods.ConfigFor(new TrainingOptions { Method = "nope" }, Tiny(), 10));
        Assert.Contains("lora, dora", e.Message);
    }

    [Fact]
    public void An_adapter_config_file_is_the_recipe_and_flags_given_override_what_they_name()
    {
        var path = Write("""
            {"peft_type": "LOHA", "r": 6, "alpha": 12, "rank_dropout": 0.25, "module_dropout": 0.1,
             "target_modules": ["q_proj", "o_proj"], "inference_mode": true, "auto_mapping": null}
            """);
        var fromFile = Assert.IsType<LoHaConfig>(Methods.ConfigFor(new TrainingOptions { AdapterConfig = path }, Tiny(), 10));
        Assert.Equal((6, 12.0, 0.25, 0.1), (fromFile.R, fromFile.Alpha, fromFile.RankDropout, fromFile.ModuleDropout));
        Assert.Equal(["q_proj", "o_proj"], fromFile.TargetModules!.Names);
        Assert.False(fromFile.InferenceMode);
        Assert.Equal("CAUSAL_LM", fromFile.TaskType);
        var flags = Assert.IsType<LoHaConfig>(Methods.ConfigFor(
            new TrainingOptions { AdapterConfig = path, LoraR = 2, LoraTargetModules = ["v_proj"], Method = "lora" }, Tiny(), 10));
        Assert.Equal((2, 12.0, 0.25), (flags.R, flags.Alpha, flags.RankDropout));
        Assert.Equal(["v_proj"], flags.TargetModules!.Names);
        // A typed flag wins even when its value is the default (--lora-r 8 over the file's r: 6).
        var typed = new TrainingOptions { AdapterConfig = path }.With("--lora-r", "8").With("--lora-alpha", "16");
        var typedDefaults = Assert.IsType<LoHaConfig>(Methods.ConfigFor(typed, Tiny(), 10));
        Assert.Equal((8, 16.0, 0.25), (typedDefaults.R, typedDefaults.Alpha, typedDefaults.RankDropout));
    }

    [Fact]
    public void Every_method_setting_is_reachable_under_peft_names()
    {
        var path = Write("""{"peft_type": "VERA", "r": 32, "d_initial": 0.5, "vera_dropout": 0.1, "target_modules": ["q_proj"], "projection_prng_key": 3}""");
        var c = Assert.IsType<VeraConfig>(Methods.ConfigFor(new TrainingOptions { AdapterConfig = path }, Tiny(), 10));
        Assert.Equal((32, 0.5, 0.1, 3L), (c.R, c.DInitial, c.VeraDropout, c.ProjectionPrngKey));
        var pm = Peft.PeftModel.Create(AutoModel.Load(Repo.Fixture("models", "tiny-llama")), c);
        Assert.Contains(pm.AdapterStateDict("default"), kv => kv.Key.EndsWith("q_proj.vera_lambda_d") && kv.Value.shape[0] == 32);
    }

    [Theory]
    [InlineData("alora_invocation_tokens", "[128, 9]")]
    [InlineData("layer_replication", "[[0, 2], [1, 2]]")]
    [InlineData("trainable_token_indices", "[5, 6]")]
    [InlineData("target_parameters", "[\"experts.gate_up_proj\"]")]
    [InlineData("use_qalora", "true")]
    [InlineData("use_bdlora", "{\"block\": 2}")]
    public void Peft_options_we_do_not_implement_are_refused_by_name(string key, string value)
    {
        var peft = JsonNode.Parse(File.ReadAllText(Path.Combine(new Tuners.AdapterFixture("llama-lora-qv").Folder, PeftConfigJson.FileName)))!.AsObject();
        Assert.IsType<LoraConfig>(PeftConfigJson.Parse(peft.ToJsonString()));   // PEFT writes them unset (null, false): accepted
        peft[key] = JsonNode.Parse(value);
        var e = Assert.Throws<NotSupportedException>(() => PeftConfigJson.Parse(peft.ToJsonString(), "some/adapter_config.json"));
        Assert.Contains($"\"{key}\"", e.Message);
        Assert.Contains("some/adapter_config.json", e.Message);
        peft["peft_type"] = "ADALORA";
        Assert.Throws<NotSupportedException>(() => PeftConfigJson.Parse(peft.ToJsonString()));
    }
}
