using PeftSharp.Merging;

namespace PeftSharp.Tests.Merging;

/// <summary>Each method declares what it reads, as mergekit's parameters() / tensor_parameters(); anything else is an error.</summary>
public class MergeParameterTests
{
    const string Gta = "int8_mask, normalize, rescale, lambda";
    const string Ties = Gta + ", majority_sign_method, convention";

    [Theory]
    [InlineData("linear", "normalize", "weight")]
    [InlineData("task_arithmetic", Gta, "weight, density")]
    [InlineData("magnitude_prune", Gta, "weight, density")]
    [InlineData("ties", Ties, "weight, density")]
    [InlineData("dare_linear", Gta, "weight, density")]
    [InlineData("dare_ties", Ties, "weight, density")]
    [InlineData("breadcrumbs", Gta, "weight, density, gamma")]
    [InlineData("breadcrumbs_ties", Ties, "weight, density, gamma")]
    [InlineData("della", Ties, "weight, density, epsilon")]
    [InlineData("della_linear", Gta, "weight, density, epsilon")]
    [InlineData("slerp", "t", "")]
    [InlineData("model_stock", "filter_wise", "")]
    [InlineData("sce", "int8_mask, select_topk", "")]
    [InlineData("nearswap", "t", "")]
    [InlineData("nuslerp", "nuslerp_row_wise, nuslerp_flatten", "weight")]
    [InlineData("multislerp", "normalize_weights, eps", "weight")]
    [InlineData("karcher", "max_iter, tol", "")]
    [InlineData("pcb", "pcb_ratio", "weight")]
    public void Each_method_declares_mergekits_parameters(string name, string global, string perModel)
    {
        var m = MergeMethods.Get(name);
        Assert.Equal(global, string.Join(", ", m.Parameters.Select(p => p.Name)));
        Assert.Equal(perModel, string.Join(", ", m.ModelParameters.Select(p => p.Name)));
    }

    [Theory]
    [InlineData("ties", "normalize", true)]
    [InlineData("ties", "rescale", false)]
    [InlineData("dare_ties", "normalize", false)]
    [InlineData("dare_ties", "rescale", true)]
    [InlineData("della", "normalize", true)]
    [InlineData("della", "rescale", true)]
    [InlineData("della_linear", "normalize", false)]
    [InlineData("della_linear", "rescale", true)]
    [InlineData("della", "epsilon", 0.15)]
    [InlineData("breadcrumbs", "gamma", 0.01)]
    [InlineData("task_arithmetic", "lambda", 1.0)]
    [InlineData("task_arithmetic", "density", 1.0)]
    [InlineData("linear", "normalize", true)]
    [InlineData("nuslerp", "nuslerp_flatten", true)]
    [InlineData("nuslerp", "nuslerp_row_wise", false)]
    [InlineData("multislerp", "normalize_weights", true)]
    [InlineData("multislerp", "eps", 1e-8)]
    [InlineData("karcher", "max_iter", 10.0)]
    [InlineData("karcher", "tol", 1e-5)]
    [InlineData("sce", "select_topk", 1.0)]
    public void Defaults_are_mergekits(string name, string parameter, object value) =>
        Assert.Equal(value, MergeMethods.Get(name).Find(parameter)!.Default);

    [Theory]
    [InlineData("ties", "weight")]
    [InlineData("slerp", "t")]
    [InlineData("nearswap", "t")]
    [InlineData("nuslerp", "weight")]
    public void Required_parameters_are_marked(string name, string parameter) =>
        Assert.True(MergeMethods.Get(name).Find(parameter)!.Required);

    readonly string dir = TestDirs.New();

    MergeException Fails(string yaml)
    {
        TinyModels.Write(dir, "base", 1);
        TinyModels.Write(dir, "a", 2);
        return Assert.Throws<MergeException>(() =>
            ModelMerger.Run(MergeConfigYaml.Parse(yaml) with { BaseDirectory = dir }, Path.Combine(dir, "out")));
    }

    [Fact]
    public void A_parameter_the_method_does_not_read_is_an_error_naming_what_it_reads()
    {
        var e = Fails("merge_method: ties\nbase_model: base\nparameters: {weight: 1, t: 0.5}\nmodels: [a]");
        Assert.Equal("parameters: merge_method 'ties' does not read 't' (it reads global: " + Ties + "; per model: weight, density)", e.Message);
        e = Fails("merge_method: slerp\nbase_model: base\nparameters: {t: 0.5, density: 0.5}\nmodels: [a]");
        Assert.Contains("merge_method 'slerp' does not read 'density' (it reads global: t; per model: none)", e.Message);
        e = Fails("merge_method: task_arithmetic\nbase_model: base\nmodels:\n  - model: a\n    parameters: {weight: 1, gamma: 0.1}");
        Assert.Equal("models[0] (a).parameters: merge_method 'task_arithmetic' does not read 'gamma' (it reads global: " + Gta +
            "; per model: weight, density)", e.Message);
        Assert.False(Directory.Exists(Path.Combine(dir, "out")));
    }

    [Fact]
    public void A_global_parameter_under_a_model_is_an_error_saying_where_it_belongs()
    {
        // mergekit reads global parameters from the top level only, so under a model it would be ignored
        var e = Fails("merge_method: ties\nbase_model: base\nmodels:\n  - model: a\n    parameters: {weight: 1, normalize: false}");
        Assert.Equal("models[0] (a).parameters: 'normalize' is a global parameter of merge_method 'ties': set it under the top-level parameters:", e.Message);
    }

    [Fact]
    public void Lambda_scales_the_merged_task_vector()
    {
        TinyModels.Write(dir, "base", 1);
        TinyModels.Write(dir, "a", 2);
        ModelMerger.Run(MergeConfigYaml.Parse("merge_method: task_arithmetic\nbase_model: base\nparameters: {weight: 0.5, lambda: 0.3}\nmodels: [a]")
            with { BaseDirectory = dir }, Path.Combine(dir, "out"));
        var b = TinyModels.Read(Path.Combine(dir, "base"));
        var a = TinyModels.Read(Path.Combine(dir, "a"));
        foreach (var (n, t) in TinyModels.Read(Path.Combine(dir, "out")))
            Numerics.Close(b[n] + (a[n] - b[n]) * 0.15, t, 1e-6, n);
    }
}
