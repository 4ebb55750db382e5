using System.Text.Json.Nodes;
using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Models;

/// <summary>Mistral and Qwen2 (no Python fixture here): configs in the transformers 4.x form, biases, the sliding window.</summary>
[Collection(SerialRng.Name)]
public class ArchitectureVariantTests
{
    static ModelConfig Config(string type, string extra) => ModelConfig.Parse(JsonNode.Parse($$"""
        {"model_type": "{{type}}", "architectures": ["X"], "vocab_size": 64, "hidden_size": 32, "intermediate_size": 48,
         "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-6,
         "rope_theta": 500000.0, {{extra}} "tie_word_embeddings": true}
        """)!.AsObject());

    [Fact]
    public void Qwen2_has_qkv_bias_and_round_trips_through_a_saved_checkpoint()
    {
        manual_seed(1);
        var c = Config("qwen2", "");
        Assert.Equal(500000.0, c.RopeTheta);
        var model = AutoModel.Create(c);
        var names = model.named_parameters().Select(p => p.name).ToList();
        Assert.Contains("model.layers.0.self_attn.q_proj.bias", names);
        Assert.DoesNotContain("model.layers.0.self_attn.o_proj.bias", names);
        var dir = IO.SafetensorsTests.TempDir();
        ModelSaving.SavePretrained(model, null, dir);
        var back = AutoModel.Load(dir);
        using var ids = randint(0, 64, [2, 10]);
        using var _ = no_grad();
        Numerics.Close(model.Forward(ModelInputs.Ids(ids)), back.Forward(ModelInputs.Ids(ids)), 1e-6);
    }

    [Fact]
    public void Mistral_sliding_window_limits_how_far_back_a_token_sees()
    {
        manual_seed(2);
        var model = AutoModel.Create(Config("mistral", "\"sliding_window\": 4,"));
        using var ids = randint(0, 64, [1, 12]);
        using var changed = ids.clone();
        changed[0, 0] = (ids[0, 0] + 1) % 64;
        using var _ = no_grad();
        var a = model.Forward(ModelInputs.Ids(ids));
        var b = model.Forward(ModelInputs.Ids(changed));
        // Two layers of a 4-token window reach 6 positions back: from position 7 on, token 0 is out of sight.
        Numerics.Close(a[.., 7..], b[.., 7..], 1e-6, "beyond the window");
        Assert.True(Numerics.MaxAbsDiff(a[.., 1..4], b[.., 1..4]) > 1e-4, "inside the window the change must show");
    }

    [Fact]
    public void Llama3_rope_scaling_in_the_4x_form_is_read()
    {
        const string scaling = "\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192},";
        var c = Config("llama", scaling);
        Assert.Equal("llama3", c.RopeScaling!.Type);
        Assert.Equal(8.0, c.RopeScaling.Factor);
        using var _ = no_grad();
        var logits = AutoModel.Create(c).Forward(ModelInputs.Ids(randint(0, 64, [1, 5])));
        Assert.True(isfinite(logits).all().item<bool>());
        var e = Assert.Throws<NotSupportedException>(() => Config("falcon", ""));
        Assert.Contains("llama, mistral, qwen2, qwen3, gemma2, gemma3_text, gemma3, phi3, gpt2, bert", e.Message);
    }
}
