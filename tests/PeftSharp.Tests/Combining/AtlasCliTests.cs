using System.Text.Json;
using System.Text.RegularExpressions;
using PeftSharp.IO;
using PeftSharp.Merging;
using PeftSharp.Tests.Cli;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Combining;

/// <summary>
/// <c>merge-models</c> with <c>merge_method: atlas</c> on tiny Llamas, as in <see cref="AtlasTests"/>: the data is
/// sampled from a target model; the base is the target plus noise; task model "good" is the target (its task vector
/// helps), "bad" is the base plus another draw of noise (its task vector hurts).
/// </summary>
public class AtlasCliTests(AtlasCliTests.Toy toy, ITestOutputHelper output) : IClassFixture<AtlasCliTests.Toy>, IDisposable
{
    /// <summary>The models and data, and one run of 40 steps with held-out data that two tests read.</summary>
    public sealed class Toy : IDisposable
    {
        public string Dir { get; } = Merging.TestDirs.New();
        public string TrainFile { get; }
        public string EvalFile { get; }
        internal CliRun.Result Learned { get; }

        public Toy()
        {
            var target = TinyLlama.Weights(seed: 1);
            var baseWeights = TinyLlama.Noisy(target, 2, 0.3);
            var noise = TinyLlama.Noisy(target, 3, 0.3);
            TinyLlama.Write(Dir, "base", baseWeights);
            TinyLlama.Write(Dir, "good", target);
            TinyLlama.Write(Dir, "bad", baseWeights.ToDictionary(kv => kv.Key, kv => kv.Value + (noise[kv.Key] - target[kv.Key])));
            using var model = TinyLlama.Load(target);
            TrainFile = TinyLlama.WriteJsonl(Path.Combine(Dir, "train.jsonl"), TinyLlama.Sample(model, rows: 16, length: 12, seed: 4));
            EvalFile = TinyLlama.WriteJsonl(Path.Combine(Dir, "eval.jsonl"), TinyLlama.Sample(model, rows: 16, length: 12, seed: 5));
            var yaml = Path.Combine(Dir, "learned.yaml");
            File.WriteAllText(yaml, "merge_method: atlas\nbase_model: base\nparameters: {steps: 40, learning_rate: 0.05, batch_size: 16, init_lambda: 0.3}\nmodels: [good, bad]\n");
            Learned = CliRun.Run("merge-models", "--config", yaml, "--out", Path.Combine(Dir, "learned"), "--train-file", TrainFile, "--eval-file", EvalFile, "-q");
        }

        public void Dispose() => Directory.Delete(Dir, recursive: true);
    }

    readonly string dir = Directory.CreateDirectory(Path.Combine(toy.Dir, Guid.NewGuid().ToString("N"))).FullName;
    readonly string trainFile = toy.TrainFile;

    public void Dispose()
    {
        if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
    }

    string Yaml(string parameters, string models = "[good, bad]", string method = "atlas")
    {
        var path = Path.Combine(toy.Dir, $"merge-{Guid.NewGuid():N}.yaml");
        File.WriteAllText(path, $"merge_method: {method}\nbase_model: base\nparameters: {{{parameters}}}\nmodels: {models}\n");
        return path;
    }

    CliRun.Result Atlas(string yaml, string outName, params string[] more) =>
        CliRun.Run(["merge-models", "--config", yaml, "--out", Path.Combine(dir, outName), "--train-file", trainFile, "-q", .. more]);

    sealed record Coefficients(string[] TaskModels, Dictionary<string, double[]> Lambdas, double[] Losses, JsonElement Options);

    Coefficients Read(string outName) => ReadFrom(Path.Combine(dir, outName));

    static Coefficients ReadFrom(string folder)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(folder, PeftSharp.Merging.Atlas.CoefficientsFile)));
        var root = doc.RootElement;
        return new Coefficients(root.GetProperty("task_models").Deserialize<string[]>()!,
            root.GetProperty("coefficients").Deserialize<Dictionary<string, double[]>>()!,
            root.GetProperty("losses").Deserialize<double[]>()!, root.GetProperty("options").Clone());
    }

    [Fact]
    public void The_written_model_is_the_base_plus_the_task_vectors_scaled_by_the_written_coefficients()
    {
        Assert.True(toy.Learned.Code == 0, toy.Learned.Err);
        var c = ReadFrom(Path.Combine(toy.Dir, "learned"));
        Assert.Equal(["good", "bad"], c.TaskModels);
        var written = Merging.TinyModels.Read(Path.Combine(toy.Dir, "learned"));
        var (b, good, bad) = (Merging.TinyModels.Read(Path.Combine(toy.Dir, "base")), Merging.TinyModels.Read(Path.Combine(toy.Dir, "good")),
            Merging.TinyModels.Read(Path.Combine(toy.Dir, "bad")));
        // every tensor is a parameter both task models change: each has its own pair of coefficients
        Assert.Equal(b.Keys.Order(), c.Lambdas.Keys.Order());
        Assert.Equal(b.Keys.Order(), written.Keys.Order());
        foreach (var (name, w) in written)
        {
            using var scope = NewDisposeScope();
            var l = c.Lambdas[name];
            var expected = b[name].to(ScalarType.Float64) + l[0] * (good[name] - b[name]).to(ScalarType.Float64)
                + l[1] * (bad[name] - b[name]).to(ScalarType.Float64);
            Assert.True((w.to(ScalarType.Float64) - expected).abs().max().item<double>() < 1e-6, name);
        }
        // learned, not left at init_lambda
        Assert.Contains(c.Lambdas.Values, l => Math.Abs(l[0] - 0.3) > 0.01);
        Assert.True(File.Exists(Path.Combine(toy.Dir, "learned", "config.json")));
    }

    [Fact]
    public void The_loss_falls_as_the_helpful_task_vector_gains_weight_and_the_harmful_one_loses_it()
    {
        var r = toy.Learned;
        Assert.True(r.Code == 0, r.Err);
        var c = ReadFrom(Path.Combine(toy.Dir, "learned"));
        double MeanOf(int t) => c.Lambdas.Values.Average(l => l[t]);
        // Measured: training loss 5.18 -> 2.95 over 40 steps, held-out 5.23 -> 3.80; mean coefficients 0.38 (good) and 0.05 (bad), from 0.3 each.
        string seen = $"good {MeanOf(0)}, bad {MeanOf(1)}, loss {c.Losses[0]} -> {c.Losses[^1]}; {r.Out}";
        output.WriteLine(seen);
        Assert.Equal(40, c.Losses.Length);
        Assert.True(c.Losses[^1] < 0.7 * c.Losses[0], seen);
        Assert.True(MeanOf(0) > 0.3 && MeanOf(1) < 0.2, seen);
        // the held-out data (another sample of the target) agrees
        var m = Regex.Match(r.Out, @"held-out loss on .*: (\d+\.\d+) \(base\) -> (\d+\.\d+) \(composed\)");
        Assert.True(m.Success, r.Out);
        Assert.True(double.Parse(m.Groups[2].Value) < 0.8 * double.Parse(m.Groups[1].Value), r.Out);
        Assert.Contains("training loss", r.Out);
        Assert.Contains(PeftSharp.Merging.Atlas.CoefficientsFile, r.Out);
    }

    [Fact]
    public void Reading_the_inputs_per_tensor_learns_exactly_what_holding_the_task_vectors_learns()
    {
        Assert.True(toy.Learned.Code == 0, toy.Learned.Err);
        var fromCli = ReadFrom(Path.Combine(toy.Dir, "learned"));
        using var scope = NewDisposeScope();
        var data = HeldOutLoss.Read(toy.TrainFile, null, padId: 0);
        var o = new AtlasOptions(Steps: 40, LearningRate: 0.05, BatchSize: 16, Initial: 0.3);
        // the library's call by folders takes the same path as the command line
        var byFolders = PeftSharp.Merging.Atlas.Run(Path.Combine(toy.Dir, "base"), [Path.Combine(toy.Dir, "good"), Path.Combine(toy.Dir, "bad")],
            data, o, Path.Combine(dir, "library"));
        // and the task vectors held in memory, as LearnInPlace takes them
        var b = Merging.TinyModels.Read(Path.Combine(toy.Dir, "base"));
        var taus = new[] { "good", "bad" }.Select(m => (IReadOnlyDictionary<string, Tensor>)Merging.TinyModels.Read(Path.Combine(toy.Dir, m))
            .ToDictionary(kv => kv.Key, kv => kv.Value - b[kv.Key])).ToList();
        using var model = TinyLlama.Load(b);
        var held = PeftSharp.Merging.Atlas.LearnInPlace(model, taus, data, o);
        Assert.Equal(fromCli.Losses, held.Losses);
        Assert.Equal(fromCli.Losses, byFolders.Losses);
        foreach (var (name, l) in fromCli.Lambdas)
        {
            Assert.Equal(l, held.Coefficients[name]);
            Assert.Equal(l, byFolders.Coefficients[name]);
        }
    }

    [Fact]
    public void Yaml_parameters_reach_the_options_and_the_command_line_overrides_them()
    {
        var yaml = Yaml("steps: 3, learning_rate: 0.02, batch_size: 4, init_lambda: 0.5, seed: 7");
        Assert.True(Atlas(yaml, "yaml").Code == 0);
        var c = Read("yaml");
        Assert.Equal(3, c.Losses.Length);
        Assert.Equal(0.02, c.Options.GetProperty("learning_rate").GetDouble());
        Assert.Equal(4, c.Options.GetProperty("batch_size").GetInt32());
        Assert.Equal(0.5, c.Options.GetProperty("init_lambda").GetDouble());
        Assert.Equal(7, c.Options.GetProperty("seed").GetInt64());

        var r = Atlas(yaml, "cli", "--steps", "1", "--learning-rate", "0.1", "--seed", "9");
        Assert.True(r.Code == 0, r.Err);
        c = Read("cli");
        Assert.Single(c.Losses);
        Assert.Equal(9, c.Options.GetProperty("seed").GetInt64());
        Assert.Equal(0.1, c.Options.GetProperty("learning_rate").GetDouble());
        // Adam's first step is lr * g / (|g| + 1e-8): each coefficient moves from init_lambda (the YAML's) by the learning rate (the command line's)
        Assert.All(c.Lambdas.Values.SelectMany(l => l), l => Assert.InRange(Math.Abs(l - 0.5), 0.1 * (1 - 1e-3), 0.1 * (1 + 1e-9)));
    }

    [Fact]
    public void A_lora_adapter_is_a_task_vector_of_the_tensors_it_targets()
    {
        var baseModel = Repo.Fixture("models", "tiny-llama");
        var adapter = Repo.Fixture("adapters", "llama-lora-qv");
        using var g = new Generator(3, device: null);
        var ids = randint(0, 512, [8, 10], dtype: ScalarType.Int64, generator: g);
        var data = TinyLlama.WriteJsonl(Path.Combine(dir, "ids.jsonl"), ids);
        var yaml = Path.Combine(dir, "lora.yaml");
        File.WriteAllText(yaml, $"merge_method: atlas\nbase_model: {baseModel}\nparameters: {{steps: 3, learning_rate: 0.1}}\nmodels: [{adapter}]\n");
        var r = CliRun.Run("merge-models", "--config", yaml, "--out", Path.Combine(dir, "lora"), "--train-file", data, "-q");
        Assert.True(r.Code == 0, r.Err);
        var c = Read("lora");
        // PEFT's merge_and_unload of this adapter is base + delta: the output must be base + lambda_b delta_b
        using var b = Checkpoint.Open(baseModel);
        using var merged = SafetensorsFile.Open(Path.Combine(adapter, "merged_model.safetensors"));
        using var written = Checkpoint.Open(Path.Combine(dir, "lora"));
        var targeted = merged.Names.Where(n => !(merged.Load(n) - b.Load(n)).abs().max().item<float>().Equals(0f)).Order().ToList();
        Assert.Equal(targeted, c.Lambdas.Keys.Order());
        Assert.All(targeted, n => Assert.Matches(@"\.(q_proj|v_proj)\.weight$", n));
        foreach (var n in b.Names)
        {
            using var scope = NewDisposeScope();
            var expected = c.Lambdas.TryGetValue(n, out var l) ? b.Load(n) + l[0] * (merged.Load(n) - b.Load(n)) : b.Load(n);
            Assert.True(Numerics.MaxAbsDiff(expected, written.Load(n)) < 1e-6, n);
        }
        Assert.Contains(c.Lambdas.Values, l => Math.Abs(l[0]) > 0.05);

        // written as mergekit's model+lora, and as a LoRA adapter (adapter_output, here from --adapter-rank): lambda_b delta_b
        // has the adapter's rank, so rank 8 keeps it whole
        File.WriteAllText(yaml, $"merge_method: atlas\nbase_model: {baseModel}\nparameters: {{steps: 3, learning_rate: 0.1}}\nmodels: [{baseModel}+{adapter}]\n");
        r = CliRun.Run("merge-models", "--config", yaml, "--out", Path.Combine(dir, "lora-out"), "--train-file", data, "--adapter-rank", "8", "-q");
        Assert.True(r.Code == 0, r.Err);
        var asAdapter = Read("lora-out");
        Assert.Equal(c.Lambdas.Keys.Order(), asAdapter.Lambdas.Keys.Order());
        Assert.Equal(c.Losses, asAdapter.Losses);
        using var adapterOut = AdapterDelta.Open(Path.Combine(dir, "lora-out"));
        Assert.Equal(targeted, adapterOut.Targets.Order());
        foreach (var n in targeted)
        {
            using var scope = NewDisposeScope();
            var baseWeight = b.Load(n);
            var expected = asAdapter.Lambdas[n][0] * (merged.Load(n) - baseWeight);
            Assert.True(Numerics.MaxAbsDiff(expected, adapterOut.Delta(n, baseWeight)!) < 1e-5, n);
        }
    }

    [Fact]
    public void Atlas_needs_training_data_and_other_methods_refuse_it()
    {
        CliRun.Run("merge-models", "--config", Yaml("steps: 3"), "--out", Path.Combine(dir, "x"), "-q").AssertError("--train-file", "atlas");
        CliRun.Run("merge-models", "--config", Yaml("weight: 0.5", method: "task_arithmetic"), "--out", Path.Combine(dir, "x"), "--train-file", trainFile, "-q")
            .AssertError("--train-file", "task_arithmetic");
        CliRun.Run("merge-models", "--config", Yaml("weight: 0.5", method: "task_arithmetic"), "--out", Path.Combine(dir, "x"), "--steps", "3", "-q")
            .AssertError("--steps", "task_arithmetic");
        var missing = Path.Combine(dir, "no-such.jsonl");
        CliRun.Run("merge-models", "--config", Yaml("steps: 3"), "--out", Path.Combine(dir, "x"), "--train-file", missing, "-q").AssertError("--train-file", missing);
        // the library refuses to merge atlas without data, by name
        var e = Assert.Throws<MergeException>(() => ModelMerger.Run(MergeConfigYaml.Load(Yaml("steps: 3")), Path.Combine(dir, "x")));
        Assert.Contains("--train-file", e.Message);
        Assert.False(Directory.Exists(Path.Combine(dir, "x")));
    }

    [Fact]
    public void Bad_options_and_mismatched_models_are_refused_by_name_before_learning()
    {
        Atlas(Yaml("steps: 0"), "x").AssertError("parameters.steps", "at least 1");
        Atlas(Yaml("steps: 2.5"), "x").AssertError("parameters.steps", "whole number");
        Atlas(Yaml("learning_rate: -1"), "x").AssertError("parameters.learning_rate");
        Atlas(Yaml("steps: [1, 5]"), "x").AssertError("parameters.steps", "one number");
        Atlas(Yaml("lr: 0.1"), "x").AssertError("'lr'", "learning_rate");
        Atlas(Yaml(""), "x", "--steps", "0").AssertError("--steps", "at least 1");
        Atlas(Yaml("", "[{model: good, parameters: {weight: 2}}]"), "x").AssertError("weight");
        var noBase = Path.Combine(toy.Dir, "no-base.yaml");
        File.WriteAllText(noBase, "merge_method: atlas\nmodels: [good, bad]\n");
        Atlas(noBase, "x").AssertError("atlas", "base_model");

        var odd = TinyLlama.Weights(seed: 9);
        odd["model.layers.1.mlp.up_proj.weight"] = randn(25, 16);
        TinyLlama.Write(toy.Dir, "odd", odd);
        Atlas(Yaml("steps: 3", "[good, odd]"), "x").AssertError("model.layers.1.mlp.up_proj.weight", "'odd'");
        Assert.False(Directory.Exists(Path.Combine(dir, "x")));
    }
}
