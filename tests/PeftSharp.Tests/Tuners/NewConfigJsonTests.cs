using System.Text.Json.Nodes;
using PeftSharp.Tuners;
using PeftSharp.Tuners.BitFit;
using PeftSharp.Tuners.Bottleneck;
using PeftSharp.Tuners.LnTuning;
using PeftSharp.Tuners.PrefixTuning;
using PeftSharp.Tuners.PromptTuning;
using PeftSharp.Tuners.PTuning;
using PeftSharp.Tuners.Ssf;

namespace PeftSharp.Tests.Tuners;

/// <summary>adapter_config.json of the prompt-learning, LN tuning, bottleneck, SSF and BitFit methods (round trips: MethodContractTests).</summary>
public class NewConfigJsonTests
{
    [Fact]
    public void Json_names_are_snake_case_and_ours_say_so()
    {
        var json = JsonNode.Parse(PeftConfigJson.Serialize(new BottleneckConfig { AdapterType = "parallel", Scaling = 4 }))!.AsObject();
        Assert.Equal("BOTTLENECK_ADAPTER", json["peft_type"]!.GetValue<string>());
        foreach (var key in new[] { "adapter_type", "placement", "reduction_factor", "non_linearity", "scaling", "adapter_dropout", "target_modules" })
            Assert.True(json.ContainsKey(key), key);
        Assert.Equal("SSF", JsonNode.Parse(PeftConfigJson.Serialize(new SsfConfig()))!["peft_type"]!.GetValue<string>());
        Assert.Equal("BITFIT", JsonNode.Parse(PeftConfigJson.Serialize(new BitFitConfig()))!["peft_type"]!.GetValue<string>());
        var p = JsonNode.Parse(PeftConfigJson.Serialize(new PromptEncoderConfig { NumVirtualTokens = 3 }))!.AsObject();
        Assert.Equal("P_TUNING", p["peft_type"]!.GetValue<string>());
        foreach (var key in new[] { "encoder_reparameterization_type", "encoder_hidden_size", "encoder_num_layers", "encoder_dropout", "num_virtual_tokens", "token_dim" })
            Assert.True(p.ContainsKey(key), key);
        var t = JsonNode.Parse(PeftConfigJson.Serialize(new PromptTuningConfig { NumVirtualTokens = 3, Tokenizer = s => [1] }))!.AsObject();
        Assert.False(t.ContainsKey("tokenizer"));
        Assert.Equal("RANDOM", t["prompt_tuning_init"]!.GetValue<string>());
        Assert.Equal("LN_TUNING", JsonNode.Parse(PeftConfigJson.Serialize(new LnTuningConfig()))!["peft_type"]!.GetValue<string>());
    }

    [Theory]
    [InlineData("llama-prompt-tuning")]
    [InlineData("llama-prefix-tuning")]
    public void Peft_configs_parse_fully_and_write_back_every_key_unchanged(string name)
    {
        var path = Path.Combine(new AdapterFixture(name).Folder, PeftConfigJson.FileName);
        var peft = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        var config = PeftConfigJson.Load(path);
        Assert.True(config.IsPromptLearning);
        var tuner = TunerRegistry.For(config);
        Assert.All(config.Extra?.Keys.ToList() ?? [], k => Assert.Contains(k, tuner.KnownUnusedKeys));
        var ours = JsonNode.Parse(PeftConfigJson.Serialize(config))!.AsObject();
        foreach (var (key, value) in peft)
            Assert.True(JsonNode.DeepEquals(value, ours[key]), $"{key}: PEFT {value?.ToJsonString()} vs ours {ours[key]?.ToJsonString()}");
    }

    [Fact]
    public void A_peft_ln_tuning_config_parses()
    {
        const string json = """
            {"auto_mapping": null, "base_model_name_or_path": null, "exclude_modules": null, "inference_mode": true,
             "modules_to_save": null, "peft_type": "LN_TUNING", "peft_version": "0.21.0", "revision": null,
             "target_modules": ["post_attention_layernorm", "input_layernorm", "norm"], "task_type": "CAUSAL_LM"}
            """;
        var c = Assert.IsType<LnTuningConfig>(PeftConfigJson.Parse(json));
        Assert.Equal(["post_attention_layernorm", "input_layernorm", "norm"], c.TargetModules!.Names);
        Assert.True(c.InferenceMode);
    }
}
