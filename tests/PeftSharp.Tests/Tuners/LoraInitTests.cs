using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tuners;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tuners;

public class LoraInitTests
{
    static PretrainedModel TinyLlama() => AutoModel.Load(Repo.Fixture("models", "tiny-llama"));

    static ModelInputs Inputs() => new AdapterFixture("llama-lora-qv").Inputs();

    [Fact]
    public void Pissa_delta_and_residual_match_peft()
    {
        using var scope = NewDisposeScope();
        var pm = PeftModel.Create(TinyLlama(), new LoraConfig { R = 4, LoraAlpha = 4, TargetModules = ["q_proj", "v_proj"], InitLoraWeights = "pissa" });
        using var expected = SafetensorsFile.Open(Repo.Fixture("adapters", "llama-pissa-init", "expected_init.safetensors"));
        int checkedLayers = 0;
        foreach (var (path, layer) in pm.TunerLayers())
        {
            var lora = (LoraLayer)layer;
            var key = "base_model.model." + path;
            Numerics.Close(expected.Load(key + ".delta"), lora.LoraProduct("default"), 1e-4, key + ".delta");
            Numerics.Close(expected.Load(key + ".residual"), BaseLayers.Weight(lora.BaseLayer), 1e-4, key + ".residual");
            checkedLayers++;
        }
        Assert.Equal(4, checkedLayers);
    }

    [Theory]
    [InlineData("true")]
    [InlineData("gaussian")]
    [InlineData("pissa")]
    [InlineData("pissa_niter_4")]
    [InlineData("olora")]
    public void Initialised_model_computes_what_the_base_did(string init)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var baseLogits = TinyLlama().Forward(Inputs());
        var pm = PeftModel.Create(TinyLlama(), new LoraConfig { R = 4, LoraAlpha = 8, TargetModules = ["q_proj", "v_proj", "down_proj"], InitLoraWeights = init });
        Numerics.Close(baseLogits, pm.Forward(Inputs()), 1e-4, init);
    }

    [Theory]
    [InlineData("pissa", false)]
    [InlineData("olora", true)]
    public void Pissa_and_olora_convert_to_a_plain_lora_on_the_original_base(string init, bool rslora)
    {
        using var scope = NewDisposeScope();
        var pm = PeftModel.Create(TinyLlama(), new LoraConfig { R = 4, LoraAlpha = 8, UseRslora = rslora, TargetModules = ["q_proj", "v_proj"], InitLoraWeights = init });
        using (no_grad())
            foreach (var p in pm.TrainableParameters()) p.P.add_(randn_like(p.P) * 0.05); // as if trained
        using var _ = no_grad();
        var trained = pm.Forward(Inputs());
        var dir = IO.SafetensorsTests.TempDir();
        pm.Save(dir, convertToLora: true);
        var cfg = (LoraConfig)PeftConfigJson.Load(Path.Combine(dir, PeftConfigJson.FileName));
        Assert.Equal(8, cfg.R);
        Assert.Equal("true", cfg.InitLoraWeights);
        var onOriginal = PeftModel.FromPretrained(TinyLlama(), dir);
        Numerics.Close(trained, onOriginal.Forward(Inputs()), 1e-4);
    }
}

public class TargetingTests
{
    static PretrainedModel TinyLlama() => AutoModel.Load(Repo.Fixture("models", "tiny-llama"));

    static List<string> Targets(LoraConfig c) => PeftModel.Create(TinyLlama(), c).TunerLayers().Select(x => x.Path).ToList();

    [Fact]
    public void Regex_target_is_a_full_match()
    {
        var t = Targets(new LoraConfig { TargetModules = ModuleSelector.Pattern(@".*\.1\.self_attn\.(q|k)_proj") });
        Assert.Equal(["model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.k_proj"], t);
    }

    [Fact]
    public void Layers_to_transform_and_exclude_modules_narrow_the_targets()
    {
        var t = Targets(new LoraConfig { TargetModules = ["q_proj", "v_proj", "o_proj"], LayersToTransform = [0], LayersPattern = ["layers"], ExcludeModules = ["o_proj"] });
        Assert.Equal(["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj"], t);
    }

    [Fact]
    public void All_linear_skips_the_head()
    {
        var t = Targets(new LoraConfig { TargetModules = ["all-linear"] });
        Assert.Equal(14, t.Count);
        Assert.DoesNotContain("lm_head", t);
    }

    [Fact]
    public void No_match_lists_the_module_names_that_exist()
    {
        var e = Assert.Throws<ArgumentException>(() => Targets(new LoraConfig { TargetModules = ["query_proj"] }));
        Assert.Contains("q_proj", e.Message);
        Assert.Contains("gate_proj", e.Message);
    }

    [Fact]
    public void Rank_and_alpha_patterns_apply_per_module()
    {
        var pm = PeftModel.Create(TinyLlama(), new LoraConfig
        {
            R = 4, LoraAlpha = 8, TargetModules = ["q_proj", "v_proj"],
            RankPattern = new() { ["v_proj"] = 2 }, AlphaPattern = new() { [@"model\.layers\.1\.self_attn\.q_proj"] = 32 },
        });
        var layers = pm.TunerLayers().ToDictionary(x => x.Path, x => (LoraLayer)x.Layer);
        Assert.Equal(2, layers["model.layers.0.self_attn.v_proj"].Rank("default"));
        Assert.Equal(4, layers["model.layers.0.self_attn.q_proj"].Rank("default"));
        Assert.Equal(8.0, layers["model.layers.1.self_attn.q_proj"].Scaling("default"));
        Assert.Equal(2.0, layers["model.layers.0.self_attn.q_proj"].Scaling("default"));
    }

    [Fact]
    public void Only_adapter_weights_train_and_adapters_switch()
    {
        using var scope = NewDisposeScope();
        var pm = PeftModel.Create(TinyLlama(), new LoraConfig { R = 4, TargetModules = ["q_proj"], InitLoraWeights = "false" }, "a");
        pm.AddAdapter("b", new LoraConfig { R = 2, TargetModules = ["q_proj"], InitLoraWeights = "false" });
        Assert.All(pm.TrainableParameters(), p => Assert.Contains(".a.", p.Name));
        Assert.Equal(2 * 4 * (64 + 64), pm.TrainableParameters().Sum(p => p.P.numel()));
        // Active adapters' outputs add up at the layer.
        var layer = (LoraLayer)pm.TunerLayers().First().Layer;
        var x = randn(3, 64);
        using var _ = no_grad();
        var a = layer.call(x);
        pm.SetAdapter("b");
        var b = layer.call(x);
        pm.SetAdapter("a", "b");
        var both = layer.call(x);
        Tensor none;
        using (pm.DisableAdapters()) none = layer.call(x);
        Numerics.Close(both - none, (a - none) + (b - none), 1e-5, "two active adapters add up");
        pm.DeleteAdapter("a");
        Assert.Equal(["b"], pm.ActiveAdapters);
        Numerics.Close(b, layer.call(x), 1e-6);
        Assert.Contains("trainable%", pm.TrainableParametersSummary());
    }

    [Fact]
    public void Embedding_lora_starts_as_the_base_and_merges()
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var inputs = new AdapterFixture("llama-lora-qv").Inputs();
        var baseLogits = TinyLlama().Forward(inputs);
        var pm = PeftModel.Create(TinyLlama(), new LoraConfig { R = 4, TargetModules = ["embed_tokens"] });
        Assert.Contains(pm.TrainableParameters(), p => p.Name.EndsWith("lora_embedding_A.default"));
        Numerics.Close(baseLogits, pm.Forward(inputs), 1e-5);
        foreach (var p in pm.TrainableParameters()) p.P.add_(randn_like(p.P) * 0.1);
        var adapted = pm.Forward(inputs);
        Assert.True(Numerics.MaxAbsDiff(adapted, baseLogits) > 1e-3);
        Numerics.Close(adapted, pm.MergeAndUnload().Forward(inputs), 1e-4);
    }

    [Fact]
    public void Unknown_config_keys_warn_but_load()
    {
        var warnings = new List<string>();
        var old = PeftConfigJson.Warn;
        PeftConfigJson.Warn = warnings.Add;
        try
        {
            var c = PeftConfigJson.Parse("""{"peft_type": "LORA", "r": 4, "target_modules": "q_proj", "some_future_option": 3, "megatron_core": "x"}""");
            Assert.Equal(4, ((LoraConfig)c).R);
            Assert.Single(warnings);
            Assert.Contains("some_future_option", warnings[0]);
        }
        finally { PeftConfigJson.Warn = old; }
    }

    [Fact]
    public void Shape_mismatch_names_the_tensor_and_both_shapes()
    {
        var dir = IO.SafetensorsTests.TempDir();
        File.Copy(Repo.Fixture("adapters", "llama-lora-qv", "adapter_model.safetensors"), Path.Combine(dir, "adapter_model.safetensors"));
        File.WriteAllText(Path.Combine(dir, "adapter_config.json"), File.ReadAllText(Repo.Fixture("adapters", "llama-lora-qv", "adapter_config.json")).Replace("\"r\": 4", "\"r\": 8"));
        var e = Assert.Throws<InvalidDataException>(() => PeftModel.FromPretrained(TinyLlama(), dir));
        Assert.Contains("lora_A.weight", e.Message);
        Assert.Contains("[4,64]", e.Message);
        Assert.Contains("[8,64]", e.Message);
    }
}
