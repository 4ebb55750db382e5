using PeftSharp.Merging;

namespace PeftSharp.Tests.Merging;

public class MergeConfigYamlTests
{
    const string Example = """
        merge_method: ties
        base_model: base
        models:
          - model: a
            parameters:
              weight: [0.0, 0.5, 1.0]
              density:
                - filter: self_attn
                  value: 0.3
                - filter: mlp
                  value: [0.2, 0.6]
                - value: 0.9
          - model: b+lora_b
            source_base: other_base
            parameters: {weight: 0.4}
        parameters:
          normalize: true
          int8_mask: false
          majority_sign_method: frequency
        dtype: bfloat16
        tokenizer_source: base
        lines: {alpha: 0.1, beta: 0.9}
        adapter_output: {r: 16, lora_alpha: 32, target_modules: [q_proj, v_proj]}
        """;

    [Fact]
    public void Reads_mergekit_shape_and_our_extensions()
    {
        var c = MergeConfigYaml.Parse(Example);
        Assert.Equal("ties", c.MergeMethod);
        Assert.Equal("base", c.BaseModel);
        Assert.Equal(["a", "b+lora_b"], c.Models.Select(m => m.Model));
        Assert.Equal("other_base", c.Models[1].SourceBase);
        Assert.Equal(true, c.Parameters["normalize"].Evaluate("x", 0));
        Assert.Equal("frequency", c.Parameters["majority_sign_method"].Evaluate("x", 0));
        Assert.Equal("bfloat16", c.DType);
        Assert.Equal(new LinesConfig(0.1, 0.9), c.Lines);
        Assert.Equal(16, c.AdapterOutput!.R);
        Assert.Equal(32, c.AdapterOutput.LoraAlpha);
        Assert.Equal(["q_proj", "v_proj"], c.AdapterOutput.TargetModules!);
    }

    [Fact]
    public void Gradients_interpolate_over_depth_and_filters_pick_by_name()
    {
        var a = MergeConfigYaml.Parse(Example).Models[0].Parameters!;
        Assert.Equal(0.0, a["weight"].Evaluate("t", 0));
        Assert.Equal(0.25, a["weight"].Evaluate("t", 0.25));
        Assert.Equal(0.75, a["weight"].Evaluate("t", 0.75));
        Assert.Equal(1.0, a["weight"].Evaluate("t", 1));
        Assert.Equal(0.3, a["density"].Evaluate("model.layers.0.self_attn.q_proj.weight", 0.5));
        Assert.Equal(0.4, (double)a["density"].Evaluate("model.layers.1.mlp.up_proj.weight", 0.5)!, 12);
        Assert.Equal(0.9, a["density"].Evaluate("model.norm.weight", 1));
    }

    [Fact]
    public void Depth_follows_mergekit_layers_and_reads_everything_outside_them_at_zero()
    {
        var depth = new LayerDepth(5);
        Assert.Equal(0.0, depth.Of("model.layers.0.mlp.up_proj.weight"));
        Assert.Equal(0.5, depth.Of("model.layers.2.mlp.up_proj.weight"));
        Assert.Equal(1.0, depth.Of("model.layers.4.mlp.up_proj.weight"));
        Assert.Equal(0.75, depth.Of("transformer.h.3.attn.c_attn.weight"));
        Assert.Equal(0.0, depth.Of("model.embed_tokens.weight"));
        Assert.Equal(0.0, depth.Of("transformer.wte.weight"));
        // mergekit plans the weights before and after the layers with t = 0 (since its PR #534; before, the head was at 1)
        Assert.Equal(0.0, depth.Of("lm_head.weight"));
        Assert.Equal(0.0, depth.Of("model.norm.weight"));
        Assert.Equal(1.0, new LayerDepth(1).Of("model.layers.0.mlp.up_proj.weight"));
        // LiNeS keeps the head and final norm as deep as the last layer, the embeddings as shallow as the first
        Assert.Equal(1.0, depth.LinesOf("lm_head.weight"));
        Assert.Equal(1.0, depth.LinesOf("model.norm.weight"));
        Assert.Equal(0.0, depth.LinesOf("model.embed_tokens.weight"));
        Assert.Equal(0.5, depth.LinesOf("model.layers.2.mlp.up_proj.weight"));
        Assert.Equal(2, LayerDepth.For(["model.layers.1.x", "model.layers.0.x"], null).Layers);
    }

    [Theory]
    [InlineData("merge_method: ties\nmodels: [a]\nmodules: {}", "'modules' is not supported")]
    [InlineData("merge_method: ties\nmodels: [a]\nbase_modle: b", "unknown key 'base_modle'")]
    [InlineData("merge_method: ties", "'models:' must list")]
    [InlineData("models: [a]", "'merge_method' is required")]
    [InlineData("merge_method: ties\nmodels:\n  - model: a\n    parameters:\n      weight: []", "line 5: 'models[0].parameters.weight' is an empty list")]
    [InlineData("merge_method: ties\nmodels:\n  - model: a\n    weight: 1", "unknown key 'weight' (known: model, parameters, source_base)")]
    [InlineData("merge_method: [ties", "not valid YAML")]
    [InlineData("merge_method: ties\nmodels: [a]\nlines: {alpha: 1}", "'lines' needs beta")]
    [InlineData("merge_method: ties\nmodels: [a]\nadapter_output: {r: 2.5}", "positive integer")]
    public void Mistakes_are_reported_with_the_key_and_line(string yaml, string message)
    {
        var e = Assert.Throws<MergeException>(() => MergeConfigYaml.Parse(yaml, "merge.yaml"));
        Assert.Contains(message, e.Message);
        Assert.StartsWith("merge.yaml", e.Message);
    }
}
