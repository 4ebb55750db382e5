using PeftSharp.Merging;

namespace PeftSharp.Tests.Merging;

/// <summary>passthrough with slices: layer ranges stacked into a new model, as mergekit's frankenmerges.</summary>
public class LayerStackTests
{
    readonly string dir = TestDirs.New();

    MergeResult Merge(string yaml) => ModelMerger.Run(MergeConfigYaml.Parse(yaml) with { BaseDirectory = dir }, Path.Combine(dir, "out"));

    [Fact]
    public void Slices_stack_layer_ranges_renumbered_with_the_ends_from_the_first_and_last_models()
    {
        TinyModels.Write(dir, "a", 1);
        TinyModels.Write(dir, "b", 2);
        var result = Merge("""
            merge_method: passthrough
            dtype: float32
            slices:
              - sources:
                  - {model: a, layer_range: [0, 2]}
              - sources:
                  - model: b
                    layer_range: [1, 3]
                    parameters:
                      scale:
                        - {filter: q_proj, value: 0.5}
                        - value: 1
            """);
        var a = TinyModels.Read(Path.Combine(dir, "a"));
        var b = TinyModels.Read(Path.Combine(dir, "b"));
        var outT = TinyModels.Read(Path.Combine(dir, "out"));
        Assert.Equal(1 + 4 * 3 + 2, outT.Count);
        Assert.Equal(outT.Count, result.Tensors);
        Numerics.Close(a["model.embed_tokens.weight"], outT["model.embed_tokens.weight"], 0);
        Numerics.Close(b["model.norm.weight"], outT["model.norm.weight"], 0);
        Numerics.Close(b["lm_head.weight"], outT["lm_head.weight"], 0);
        foreach (var t in TinyModels.LayerTensors)
        {
            Numerics.Close(a[$"model.layers.0.{t}"], outT[$"model.layers.0.{t}"], 0, t);
            Numerics.Close(a[$"model.layers.1.{t}"], outT[$"model.layers.1.{t}"], 0, t);
            double scale = t.Contains("q_proj", StringComparison.Ordinal) ? 0.5 : 1;
            Numerics.Close(b[$"model.layers.1.{t}"] * scale, outT[$"model.layers.2.{t}"], 1e-7, t);
            Numerics.Close(b[$"model.layers.2.{t}"] * scale, outT[$"model.layers.3.{t}"], 1e-7, t);
        }
        Assert.Contains("\"num_hidden_layers\": 4", File.ReadAllText(Path.Combine(dir, "out", "config.json")));
    }

    [Fact]
    public void Passthrough_of_one_model_copies_it_scaled()
    {
        TinyModels.Write(dir, "a", 1);
        Merge("merge_method: passthrough\nmodels:\n  - {model: a, parameters: {scale: 2}}");
        var a = TinyModels.Read(Path.Combine(dir, "a"));
        foreach (var (n, t) in TinyModels.Read(Path.Combine(dir, "out"))) Numerics.Close(a[n] * 2, t, 1e-7, n);
    }

    [Theory]
    [InlineData("merge_method: passthrough\nslices:\n  - sources: [{model: a, layer_range: [1, 4]}]", "layer_range [1, 4] goes past its last layer (2)")]
    [InlineData("merge_method: passthrough\nslices:\n  - sources: [{model: a, layer_range: [0, 1]}, {model: b, layer_range: [0, 1]}]", "slices[0]: passthrough takes exactly one source per slice; got 2")]
    [InlineData("merge_method: slerp\nslices:\n  - sources: [{model: a, layer_range: [0, 1]}]", "'slerp' over slices is not supported")]
    [InlineData("merge_method: passthrough\nslices:\n  - sources: [{model: a, layer_range: [0, 1], parameters: {weight: 1}}]", "slices[0].sources[0].parameters: merge_method 'passthrough' does not read 'weight'")]
    [InlineData("merge_method: passthrough\nmodels: [a, b]", "passthrough copies exactly one model")]
    public void Slice_mistakes_name_what_is_wrong(string yaml, string message)
    {
        TinyModels.Write(dir, "a", 1);
        TinyModels.Write(dir, "b", 2);
        var e = Assert.Throws<MergeException>(() => Merge(yaml));
        Assert.Contains(message, e.Message);
        Assert.False(Directory.Exists(Path.Combine(dir, "out")));
    }

    [Theory]
    [InlineData("merge_method: passthrough\nslices:\n  - sources: [{model: a, layer_range: [2, 1]}]", "line 3: slices[0].sources[0]: 'layer_range' [2, 1] must be whole numbers with 0 <= start < end")]
    [InlineData("merge_method: passthrough\nslices:\n  - sources: [{model: a}]", "'layer_range' must be [start, end]")]
    [InlineData("merge_method: passthrough\nmodels: [a]\nslices:\n  - sources: [{model: a, layer_range: [0, 1]}]", "either 'models:' or 'slices:'")]
    public void Slice_yaml_mistakes_name_the_key(string yaml, string message)
    {
        var e = Assert.Throws<MergeException>(() => MergeConfigYaml.Parse(yaml, "merge.yaml"));
        Assert.Contains(message, e.Message);
    }
}
