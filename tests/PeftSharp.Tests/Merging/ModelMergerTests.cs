using PeftSharp.IO;
using PeftSharp.Merging;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Merging;

public class ModelMergerTests
{
    readonly string dir = TestDirs.New();

    MergeResult Merge(string yaml, MergeOptions? options = null, string outName = "out") =>
        ModelMerger.Run(MergeConfigYaml.Parse(yaml) with { BaseDirectory = dir }, Path.Combine(dir, outName), options);

    [Fact]
    public void Different_vocabularies_fail_naming_the_tensor_and_both_shapes()
    {
        TinyModels.Write(dir, "base", 1);
        TinyModels.Write(dir, "big", 2, TinyModels.Shapes(vocab: 12));
        var e = Assert.Throws<MergeException>(() => Merge("merge_method: task_arithmetic\nbase_model: base\nmodels:\n  - model: big\n    parameters: {weight: 1}"));
        Assert.Contains("tensor 'model.embed_tokens.weight': base 'base' has shape [10,4] but 'big' has [12,4]", e.Message);
        Assert.Contains("vocabularies differ", e.Message);
        Assert.False(Directory.Exists(Path.Combine(dir, "out")));
    }

    [Fact]
    public void Missing_tensors_fail_unless_allowed_and_then_come_from_the_models_that_have_them()
    {
        TinyModels.Write(dir, "base", 1);
        var shapes = TinyModels.Shapes();
        shapes.Remove("model.layers.1.mlp.up_proj.weight");
        TinyModels.Write(dir, "partial", 2, shapes);
        TinyModels.Write(dir, "full", 3);
        var yaml = "merge_method: task_arithmetic\nbase_model: base\nparameters: {weight: 0.5}\nmodels: [partial, full]";
        var e = Assert.Throws<MergeException>(() => Merge(yaml));
        Assert.Contains("model 'partial' has no tensor 'model.layers.1.mlp.up_proj.weight'", e.Message);
        Assert.Contains("--allow-missing", e.Message);

        var result = Merge(yaml, new MergeOptions { AllowMissing = true });
        Assert.Contains(result.Warnings, w => w.Contains("'partial' lacks 1 tensors"));
        var b = TinyModels.Read(Path.Combine(dir, "base"));
        var full = TinyModels.Read(Path.Combine(dir, "full"));
        var outT = TinyModels.Read(Path.Combine(dir, "out"));
        const string n = "model.layers.1.mlp.up_proj.weight";
        Numerics.Close(b[n] + (full[n] - b[n]) * 0.5, outT[n], 1e-6);
    }

    [Fact]
    public void Different_architectures_need_allow_crimes()
    {
        TinyModels.Write(dir, "base", 1);
        TinyModels.Write(dir, "mistral", 2, architecture: "MistralForCausalLM");
        var yaml = "merge_method: task_arithmetic\nbase_model: base\nparameters: {weight: 1}\nmodels: [mistral]";
        var e = Assert.Throws<MergeException>(() => Merge(yaml));
        Assert.Contains("MistralForCausalLM", e.Message);
        Assert.Contains("--allow-crimes", e.Message);
        Merge(yaml, new MergeOptions { AllowCrimes = true });
    }

    [Fact]
    public void Output_is_sharded_with_an_index_and_carries_config_tokenizer_and_dtype()
    {
        var b = TinyModels.Write(dir, "base", 1);
        File.WriteAllText(Path.Combine(b, "tokenizer.json"), "{}");
        TinyModels.Write(dir, "a", 2);
        var progress = new List<MergeProgress>();
        var result = Merge("merge_method: linear\nbase_model: base\ndtype: bfloat16\nmodels:\n  - model: base\n    parameters: {weight: 1}\n  - model: a\n    parameters: {weight: 3}",
            new MergeOptions { MaxShardBytes = 100, Progress = progress.Add });
        var outDir = Path.Combine(dir, "out");
        Assert.True(File.Exists(Path.Combine(outDir, Checkpoint.IndexFile)));
        Assert.True(Directory.GetFiles(outDir, "model-*-of-*.safetensors").Length > 3);
        Assert.True(File.Exists(Path.Combine(outDir, "tokenizer.json")));
        Assert.Contains("\"torch_dtype\": \"bfloat16\"", File.ReadAllText(Path.Combine(outDir, "config.json")));
        Assert.Empty(Directory.GetDirectories(dir, "out.partial-*"));
        Assert.Equal(result.Tensors + 1, progress.Count);
        Assert.Equal(Enumerable.Range(0, result.Tensors + 1), progress.Select(p => p.Done));
        Assert.Equal(result.BytesWritten, progress[^1].BytesDone);

        var outT = TinyModels.Read(outDir);
        var a = TinyModels.Read(Path.Combine(dir, "a"));
        var bt = TinyModels.Read(b);
        foreach (var (n, t) in outT)
        {
            Assert.Equal(ScalarType.BFloat16, t.dtype);
            Numerics.Close((bt[n] + a[n] * 3) / 4, t.to(ScalarType.Float32), 2e-2, n);
        }
    }

    [Fact]
    public void A_second_merge_into_the_same_folder_replaces_the_old_shards()
    {
        TinyModels.Write(dir, "base", 1);
        TinyModels.Write(dir, "a", 2);
        var yaml = "merge_method: task_arithmetic\nbase_model: base\nparameters: {weight: 1}\nmodels: [a]";
        Merge(yaml, new MergeOptions { MaxShardBytes = 100 });
        File.WriteAllText(Path.Combine(dir, "out", "README.md"), "kept");
        Merge(yaml);
        var files = Directory.GetFiles(Path.Combine(dir, "out")).Select(f => Path.GetFileName(f)!).Order(StringComparer.Ordinal).ToArray();
        Assert.Equal(["README.md", "config.json", "model.safetensors"], files);
    }

    [Fact]
    public void Lines_scales_each_task_vector_by_its_depth()
    {
        TinyModels.Write(dir, "base", 1);
        TinyModels.Write(dir, "a", 2);
        Merge("merge_method: task_arithmetic\nbase_model: base\nlines: {alpha: 0.2, beta: 0.6}\nmodels:\n  - model: a\n    parameters: {weight: 0.5}");
        var b = TinyModels.Read(Path.Combine(dir, "base"));
        var a = TinyModels.Read(Path.Combine(dir, "a"));
        var outT = TinyModels.Read(Path.Combine(dir, "out"));
        var depth = new LayerDepth(3);
        foreach (var (n, t) in outT)
            Numerics.Close(b[n] + (a[n] - b[n]) * 0.5 * (0.2 + 0.6 * depth.LinesOf(n)), t, 1e-6, n);
        Numerics.Close(b["lm_head.weight"] + (a["lm_head.weight"] - b["lm_head.weight"]) * 0.4, outT["lm_head.weight"], 1e-6, "head: 0.5 * (0.2 + 0.6)");
        Numerics.Close(b["model.layers.1.mlp.up_proj.weight"] + (a["model.layers.1.mlp.up_proj.weight"] - b["model.layers.1.mlp.up_proj.weight"]) * 0.25,
            outT["model.layers.1.mlp.up_proj.weight"], 1e-6, "middle layer: 0.5 * (0.2 + 0.6 * 0.5)");
    }

    [Fact]
    public void Lines_with_equal_factors_on_ties_equals_scaling_the_ties_delta()
    {
        TinyModels.Write(dir, "base", 1);
        TinyModels.Write(dir, "a", 2);
        TinyModels.Write(dir, "b", 3);
        const string ties = "merge_method: ties\nbase_model: base\nparameters: {weight: 0.5, density: 0.5}\nmodels: [a, b]";
        Merge(ties, outName: "plain");
        Merge(ties + "\nlines: {alpha: 0.3, beta: 0}", outName: "lines");
        var b = TinyModels.Read(Path.Combine(dir, "base"));
        var plain = TinyModels.Read(Path.Combine(dir, "plain"));
        foreach (var (n, t) in TinyModels.Read(Path.Combine(dir, "lines")))
            Numerics.Close(b[n] + (plain[n] - b[n]) * 0.3, t, 1e-6, n);
    }

    [Fact]
    public void Fine_tuning_transfer_adds_the_source_delta_to_another_base()
    {
        TinyModels.Write(dir, "target", 1);
        TinyModels.Write(dir, "source", 2);
        TinyModels.Write(dir, "source_ft", 3);
        Merge("merge_method: task_arithmetic\nbase_model: target\nmodels:\n  - model: source_ft\n    source_base: source\n    parameters: {weight: 1}");
        var t = TinyModels.Read(Path.Combine(dir, "target"));
        var s = TinyModels.Read(Path.Combine(dir, "source"));
        var f = TinyModels.Read(Path.Combine(dir, "source_ft"));
        foreach (var (n, o) in TinyModels.Read(Path.Combine(dir, "out")))
            Numerics.Close(t[n] + (f[n] - s[n]), o, 1e-6, n);
    }

    [Fact]
    public void Dare_merges_are_reproducible_per_seed()
    {
        TinyModels.Write(dir, "base", 1);
        TinyModels.Write(dir, "a", 2);
        TinyModels.Write(dir, "b", 3);
        const string yaml = "merge_method: dare_ties\nbase_model: base\nparameters: {weight: 0.5, density: 0.4}\nmodels: [a, b]";
        Merge(yaml, new MergeOptions { RandomSeed = 5 }, "one");
        Merge(yaml, new MergeOptions { RandomSeed = 5 }, "two");
        Merge(yaml, new MergeOptions { RandomSeed = 6 }, "three");
        var one = TinyModels.Read(Path.Combine(dir, "one"));
        var two = TinyModels.Read(Path.Combine(dir, "two"));
        var three = TinyModels.Read(Path.Combine(dir, "three"));
        Assert.All(one, kv => Assert.True(Numerics.Same(kv.Value, two[kv.Key]), kv.Key));
        Assert.Contains(one, kv => !Numerics.Same(kv.Value, three[kv.Key]));
    }

    [Theory]
    [InlineData("breadcrumbs", "weight: 0.5, density: 0.8, gamma: 0.1")]
    [InlineData("breadcrumbs_ties", "weight: 0.5, density: 0.8, gamma: 0.1")]
    [InlineData("dare_linear", "weight: 0.5, density: 0.5")]
    [InlineData("model_stock", "filter_wise: true")]
    [InlineData("slerp", "t: [0, 0.5, 1]")]
    public void Every_method_runs_through_yaml(string method, string parameters)
    {
        TinyModels.Write(dir, "base", 1);
        TinyModels.Write(dir, "a", 2);
        TinyModels.Write(dir, "b", 3);
        var models = method == "slerp" ? "[a]" : "[a, b]";
        var result = Merge($"merge_method: {method}\nbase_model: base\nparameters: {{{parameters}}}\nmodels: {models}");
        Assert.Empty(result.Warnings);
        foreach (var (n, t) in TinyModels.Read(Path.Combine(dir, "out")))
            Assert.True(t.isfinite().all().item<bool>(), n);
        if (method == "slerp")
        {
            // t rises with depth: layer 0 (t = 0) is the base's, layer 2 (t = 1) is a's; as in mergekit, the weights
            // outside the layers (embeddings, final norm and head) read the gradient at t = 0, so they are the base's
            var outT = TinyModels.Read(Path.Combine(dir, "out"));
            var bt = TinyModels.Read(Path.Combine(dir, "base"));
            var at = TinyModels.Read(Path.Combine(dir, "a"));
            foreach (var n in new[] { "model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight", "model.norm.weight", "lm_head.weight" })
                Numerics.Close(bt[n], outT[n], 1e-6, n);
            Numerics.Close(at["model.layers.2.mlp.up_proj.weight"], outT["model.layers.2.mlp.up_proj.weight"], 1e-6);
        }
    }

    [Theory]
    [InlineData("merge_method: ties\nmodels: [a]", "merge_method 'ties' needs base_model")]
    [InlineData("merge_method: slerp\nbase_model: base\nparameters: {t: 0.5}\nmodels: [a, b]", "needs exactly one model besides base_model; got 2")]
    [InlineData("merge_method: task_arithmetic\nbase_model: base\nmodels: [a]", "parameter 'weight' is required for model 'a'")]
    [InlineData("merge_method: task_arithmetic\nbase_model: base\nparameters: {wieght: 1}\nmodels: [a]", "merge_method 'task_arithmetic' does not read 'wieght'")]
    [InlineData("merge_method: task_arithmetic\nbase_model: base\nparameters: {weight: 1}\nmodels: [nowhere]", "model 'nowhere' not found")]
    [InlineData("merge_method: frankenmerge\nbase_model: base\nmodels: [a]", "unknown merge_method 'frankenmerge'")]
    [InlineData("merge_method: ties\nbase_model: base\nparameters: {weight: 1, majority_sign_method: most}\nmodels: [a]", "majority_sign_method 'most'")]
    public void Config_mistakes_name_what_is_wrong(string yaml, string message)
    {
        TinyModels.Write(dir, "base", 1);
        TinyModels.Write(dir, "a", 2);
        TinyModels.Write(dir, "b", 3);
        var e = Assert.Throws<MergeException>(() => Merge(yaml));
        Assert.Contains(message, e.Message);
    }
}
