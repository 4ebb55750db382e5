using System.Text.Json.Nodes;
using PeftSharp.IO;
using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Models;

/// <summary>The new architectures' configs in the transformers 5.x layout (and Gemma 3's nested one) mean what the 4.x ones do.</summary>
public class NewArchitectureConfigTests
{
    static JsonObject Config4x(string name) =>
        JsonNode.Parse(File.ReadAllText(Path.Combine(NewArchitectureParityTests.Folder(name), "config.json")))!.AsObject();

    static JsonArray Strings(params string[] xs) => new(xs.Select(x => (JsonNode)JsonValue.Create(x)!).ToArray());

    /// <summary>The fixture's config rewritten as transformers 5.x saves it: rope settings in rope_parameters, explicit layer_types.</summary>
    static JsonObject Config5x(string name)
    {
        var o = Config4x(name);
        foreach (var k in new[] { "rope_theta", "rope_scaling", "rope_local_base_freq", "sliding_window_pattern", "max_window_layers", "partial_rotary_factor", "original_max_position_embeddings" })
            o.Remove(k);
        const string F = "full_attention", S = "sliding_attention";
        switch (name)
        {
            case "tiny-qwen3":
                o["rope_parameters"] = new JsonObject { ["rope_type"] = "default", ["rope_theta"] = 10000.0 };
                o["layer_types"] = Strings(F, S, S);
                break;
            case "tiny-gemma2":
                o["rope_parameters"] = new JsonObject { ["rope_type"] = "default", ["rope_theta"] = 10000.0 };
                o["layer_types"] = Strings(S, F, S);
                break;
            case "tiny-gemma3":
                o["rope_parameters"] = new JsonObject
                {
                    [F] = new JsonObject { ["rope_type"] = "linear", ["factor"] = 4.0, ["rope_theta"] = 1000000.0 },
                    [S] = new JsonObject { ["rope_type"] = "default", ["rope_theta"] = 10000.0 },
                };
                o["layer_types"] = Strings(S, F, S, F);
                break;
            case "tiny-phi3":
                var old = Config4x(name)["rope_scaling"]!.AsObject();
                o["rope_parameters"] = new JsonObject
                {
                    ["rope_type"] = "longrope", ["rope_theta"] = 10000.0, ["partial_rotary_factor"] = 0.75,
                    ["original_max_position_embeddings"] = 8, ["short_factor"] = old["short_factor"]!.DeepClone(),
                    ["long_factor"] = old["long_factor"]!.DeepClone(),
                };
                break;
        }
        return JsonNode.Parse(o.ToJsonString())!.AsObject(); // numbers as a file holds them
    }

    [Theory]
    [MemberData(nameof(NewArchitectureParityTests.Models), MemberType = typeof(NewArchitectureParityTests))]
    public void The_5x_layout_reads_as_the_4x_one_and_gives_the_same_logits(string name)
    {
        var a = ModelConfig.Parse(Config4x(name));
        var b = ModelConfig.Parse(Config5x(name));
        Assert.Equal(a.RopeTheta, b.RopeTheta);
        Assert.Equal(a.LocalRopeTheta, b.LocalRopeTheta);
        Assert.Equal(a.RopeScaling?.Type, b.RopeScaling?.Type);
        Assert.Equal(a.RopeScaling?.Factor, b.RopeScaling?.Factor);
        Assert.Equal(a.RopeScaling?.AttentionFactor, b.RopeScaling?.AttentionFactor);
        Assert.Equal(a.PartialRotaryFactor, b.PartialRotaryFactor);
        Assert.Equal(a.LayerTypes ?? [], b.LayerTypes ?? []);

        using var scope = NewDisposeScope();
        var dir = IO.SafetensorsTests.TempDir();
        File.WriteAllText(Path.Combine(dir, "config.json"), Config5x(name).ToJsonString());
        File.Copy(Path.Combine(NewArchitectureParityTests.Folder(name), "model.safetensors"), Path.Combine(dir, "model.safetensors"));
        var model = AutoModel.Load(dir);
        using var _ = no_grad();
        Numerics.Close(NewArchitectureParityTests.Expected(name, "logits"), model.Forward(NewArchitectureParityTests.Inputs(name)), 1e-4, name);
    }

    [Fact]
    public void Defaults_follow_transformers()
    {
        var qwen3 = ModelConfig.Parse(JsonNode.Parse("""
            {"model_type": "qwen3", "vocab_size": 8, "hidden_size": 64, "intermediate_size": 8, "num_hidden_layers": 30,
             "num_attention_heads": 2, "use_sliding_window": true}
            """)!.AsObject());
        Assert.Equal(128, qwen3.HeadDim);            // Qwen3's head_dim default, not hidden / heads
        Assert.False(qwen3.AttentionBias);
        Assert.Equal(4096, qwen3.SlidingWindow);
        Assert.Equal(28, Enumerable.Range(0, 30).Count(i => !qwen3.IsSliding(i))); // layers from max_window_layers = 28 on slide
        var off = ModelConfig.Parse(JsonNode.Parse("""
            {"model_type": "qwen3", "vocab_size": 8, "hidden_size": 64, "intermediate_size": 8, "num_hidden_layers": 4,
             "num_attention_heads": 2, "sliding_window": 16, "max_window_layers": 0}
            """)!.AsObject());
        Assert.DoesNotContain(Enumerable.Range(0, 4), off.IsSliding);              // use_sliding_window defaults to false
        var qwen2 = ModelConfig.Parse(JsonNode.Parse("""
            {"model_type": "qwen2", "vocab_size": 8, "hidden_size": 64, "intermediate_size": 8, "num_hidden_layers": 3,
             "num_attention_heads": 2, "use_sliding_window": true, "sliding_window": 16, "max_window_layers": 2}
            """)!.AsObject());
        Assert.Equal([false, false, true], Enumerable.Range(0, 3).Select(qwen2.IsSliding)); // Qwen2 follows the same rule

        var gemma2 = ModelConfig.Parse(JsonNode.Parse("""{"model_type": "gemma2", "num_hidden_layers": 4}""")!.AsObject());
        Assert.Equal((50.0, 30.0, 256.0, 256, 4096), (gemma2.AttnLogitSoftcapping, gemma2.FinalLogitSoftcapping, gemma2.QueryPreAttnScalar, gemma2.HeadDim, gemma2.SlidingWindow));
        Assert.Equal([true, false, true, false], Enumerable.Range(0, 4).Select(gemma2.IsSliding));
        Assert.True(gemma2.TieWordEmbeddings);
        var gemma3 = ModelConfig.Parse(JsonNode.Parse("""{"model_type": "gemma3_text", "num_hidden_layers": 12}""")!.AsObject());
        Assert.Equal([5, 11], Enumerable.Range(0, 12).Where(i => !gemma3.IsSliding(i)));
        Assert.Equal((1_000_000.0, 10_000.0), (gemma3.RopeTheta, gemma3.LocalRopeTheta!.Value));
        Assert.Null(gemma3.FinalLogitSoftcapping);
        Assert.Null(gemma3.AttnLogitSoftcapping); // transformers' Gemma 3 attention never soft-caps

        // Phi-3-mini-128k's layout: 4.x rope_scaling without a factor; factor = 131072 / 4096 = 32.
        var phi3 = ModelConfig.Parse(JsonNode.Parse("""
            {"model_type": "phi3", "vocab_size": 8, "hidden_size": 64, "intermediate_size": 8, "num_hidden_layers": 1,
             "num_attention_heads": 4, "max_position_embeddings": 131072, "original_max_position_embeddings": 4096,
             "rope_scaling": {"type": "longrope", "short_factor": [1,1,1,1,1,1,1,1], "long_factor": [2,2,2,2,2,2,2,2]}}
            """)!.AsObject());
        Assert.Equal(32.0, phi3.RopeScaling!.Factor);
        Assert.Equal(Math.Sqrt(1 + Math.Log(32) / Math.Log(4096)), phi3.RopeScaling.AttentionFactor!.Value, 12);
        Assert.Equal(4096, phi3.RopeScaling.OriginalMaxPositionEmbeddings);
    }

    [Fact]
    public void Bad_configs_are_named_with_what_to_fix()
    {
        var dir = IO.SafetensorsTests.TempDir();
        var phi3 = Config4x("tiny-phi3");
        phi3["rope_scaling"]!["long_factor"] = new JsonArray(1.0, 2.0);
        File.WriteAllText(Path.Combine(dir, "config.json"), phi3.ToJsonString());
        var e = Assert.Throws<InvalidDataException>(() => ModelConfig.Load(dir));
        Assert.Contains("config.json: rope_scaling: short_factor has 6 entries and long_factor 2", e.Message);
        var gemma = Config4x("tiny-gemma3");
        gemma["layer_types"] = Strings("sliding_attention", "full_attention");
        File.WriteAllText(Path.Combine(dir, "config.json"), gemma.ToJsonString());
        Assert.Contains("layer_types has 2 entries but num_hidden_layers is 4", Assert.Throws<InvalidDataException>(() => ModelConfig.Load(dir)).Message);
        gemma["layer_types"] = Strings("sliding_attention", "full_attention", "chunked_attention", "full_attention");
        File.WriteAllText(Path.Combine(dir, "config.json"), gemma.ToJsonString());
        Assert.Contains("layer_types entry 'chunked_attention' is not supported", Assert.Throws<NotSupportedException>(() => ModelConfig.Load(dir)).Message);
    }

    [Fact]
    public void A_multimodal_gemma3_checkpoint_loads_its_text_model_and_saves_as_text_only()
    {
        using var scope = NewDisposeScope();
        var dir = IO.SafetensorsTests.TempDir();
        var nested = new JsonObject
        {
            ["model_type"] = "gemma3", ["architectures"] = Strings("Gemma3ForConditionalGeneration"),
            ["text_config"] = Config5x("tiny-gemma3"), ["vision_config"] = new JsonObject { ["model_type"] = "siglip_vision_model" },
        };
        File.WriteAllText(Path.Combine(dir, "config.json"), nested.ToJsonString());
        // transformers 5.x names: the text model under model.language_model.
        using (var f = SafetensorsFile.Open(Path.Combine(NewArchitectureParityTests.Folder("tiny-gemma3"), "model.safetensors")))
            SafetensorsWriter.Save(Path.Combine(dir, "model.safetensors"),
                f.Names.ToDictionary(n => "model.language_model." + n["model.".Length..], n => f.Load(n)));
        var model = AutoModel.Load(dir);
        Assert.Equal("gemma3_text", model.Config.ModelType);
        using var _ = no_grad();
        var expected = NewArchitectureParityTests.Expected("tiny-gemma3", "logits");
        var inputs = NewArchitectureParityTests.Inputs("tiny-gemma3");
        Numerics.Close(expected, model.Forward(inputs), 1e-4, "nested");

        var saved = Path.Combine(dir, "text-only");
        ModelSaving.SavePretrained(model, dir, saved);
        var back = ModelConfig.Load(saved);
        Assert.Equal(("gemma3_text", "Gemma3ForCausalLM"), (back.ModelType, back.Architecture));
        Numerics.Close(expected, AutoModel.Load(saved).Forward(inputs), 1e-4, "saved text-only");
    }

    [Fact]
    public void Gemma_scales_embeddings_by_sqrt_hidden_rounded_to_the_embedding_dtype()
    {
        using var scope = NewDisposeScope();
        // sqrt(3072) = 55.4256 is 55.5 in bfloat16: transformers multiplies by the rounded scalar.
        var c = ModelConfig.Parse(JsonNode.Parse("""
            {"model_type": "gemma3_text", "vocab_size": 4, "hidden_size": 3072, "intermediate_size": 8, "num_hidden_layers": 0,
             "num_attention_heads": 1, "num_key_value_heads": 1, "head_dim": 8}
            """)!.AsObject());
        var model = AutoModel.Create(c, ScalarType.BFloat16);
        using var _ = no_grad();
        var ids = tensor(new long[] { 0, 3 }).unsqueeze(0);
        var raw = ((TorchSharp.Modules.Embedding)model.named_modules().First(m => m.name == "model.embed_tokens").module).call(ids);
        Assert.True(Numerics.Same(raw * tensor(55.5f, ScalarType.BFloat16), model.Embed(ids)));
        // Gemma 2 scales whatever reaches the decoder (ids or passed-in embeddings); its Embed is the plain lookup.
        var g2 = AutoModel.Create(ModelConfig.Parse(JsonNode.Parse("""
            {"model_type": "gemma2", "vocab_size": 4, "hidden_size": 3072, "intermediate_size": 8, "num_hidden_layers": 0,
             "num_attention_heads": 1, "num_key_value_heads": 1, "head_dim": 8}
            """)!.AsObject()), ScalarType.BFloat16);
        Assert.True(Numerics.Same(((TorchSharp.Modules.Embedding)g2.named_modules().First(m => m.name == "model.embed_tokens").module).call(ids), g2.Embed(ids)));
    }
}
