using PeftSharp.Merging;
using PeftSharp.Tests.Cli;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Combining;

/// <summary>
/// Greedy soup on tiny Llamas: three ingredients are the target model plus a little noise, one plus a lot; the held-out
/// data is sampled from the target. Averaging good ingredients cancels noise; the bad one must be left out.
/// </summary>
public class GreedySoupTests : IDisposable
{
    readonly string dir = Merging.TestDirs.New();
    readonly Dictionary<string, Dictionary<string, Tensor>> models = [];
    readonly string evalFile;

    public GreedySoupTests()
    {
        var target = TinyLlama.Weights(seed: 1);
        models["good1"] = TinyLlama.Noisy(target, 11, 0.08);
        models["bad"] = TinyLlama.Noisy(target, 12, 0.6);
        models["good2"] = TinyLlama.Noisy(target, 13, 0.08);
        models["good3"] = TinyLlama.Noisy(target, 14, 0.08);
        foreach (var (name, w) in models) TinyLlama.Write(dir, name, w);
        using var model = TinyLlama.Load(target);
        evalFile = TinyLlama.WriteJsonl(Path.Combine(dir, "eval.jsonl"), TinyLlama.Sample(model, rows: 16, length: 12, seed: 3));
        File.WriteAllText(Path.Combine(dir, "soup.yaml"), "merge_method: linear\nmodels: [good1, bad, good2, good3]\n");
    }

    public void Dispose() => Directory.Delete(dir, recursive: true);

    MergeConfig Config() => MergeConfigYaml.Load(Path.Combine(dir, "soup.yaml"));

    [Fact]
    public void The_bad_ingredient_is_left_out_and_the_soup_is_the_uniform_average_of_the_kept_ones()
    {
        using var scope = NewDisposeScope();
        var loss = new HeldOutLoss(evalFile, null, padId: 0);
        var result = GreedySoup.Run(Config(), loss.Of, Path.Combine(dir, "soup"));

        // ranked by their own loss, best first; the bad one ranks last and stays out
        Assert.Equal(4, result.Steps.Count);
        Assert.Equal(result.Steps.Select(s => s.IndividualLoss).Order(), result.Steps.Select(s => s.IndividualLoss));
        Assert.Equal("bad", result.Steps[^1].Model);
        Assert.False(result.Steps[^1].Kept);
        Assert.DoesNotContain("bad", result.Kept);
        Assert.True(result.Kept.Count >= 2, "averaging two noisy copies of the target should beat either: " + string.Join(", ", result.Steps));
        // a step is kept exactly when it does not raise the loss of the soup so far
        double best = result.Steps[0].SoupLoss;
        foreach (var s in result.Steps.Skip(1))
        {
            Assert.Equal(s.SoupLoss <= best, s.Kept);
            if (s.Kept) best = s.SoupLoss;
        }
        Assert.Equal(best, result.Loss);

        // the output is (sum of the kept models) / k, and its loss is the one reported
        var soup = Merging.TinyModels.Read(Path.Combine(dir, "soup"));
        foreach (var (name, t) in soup)
        {
            var mean = stack(result.Kept.Select(m => models[m][name]).ToArray()).mean([0]);
            Assert.True((t - mean).abs().max().item<float>() < 1e-6, name);
        }
        Assert.Equal(result.Loss, loss.Of(Path.Combine(dir, "soup")), 9);
    }

    [Fact]
    public void The_loss_is_the_mean_cross_entropy_of_the_held_out_tokens()
    {
        using var scope = NewDisposeScope();
        using var model = TinyLlama.Load(models["good1"]);
        var ids = TinyLlama.Sample(TinyLlama.Load(models["bad"]), rows: 3, length: 7, seed: 5);
        var file = TinyLlama.WriteJsonl(Path.Combine(dir, "few.jsonl"), ids);
        using var _ = no_grad();
        var logits = model.Forward(PeftSharp.Models.ModelInputs.Ids(ids));
        // every token after the first is predicted from the ones before it
        var expected = nn.functional.cross_entropy(logits[.., ..^1].reshape(-1, TinyLlama.Vocab), ids[.., 1..].reshape(-1)).item<float>();
        Assert.Equal(expected, new HeldOutLoss(file, null, padId: 0).Of(model), 5);
    }

    [Fact]
    public void A_weighted_or_non_linear_config_is_refused_by_name()
    {
        var e = Assert.Throws<MergeException>(() => GreedySoup.Run(Config() with { MergeMethod = "ties" }, _ => 0, Path.Combine(dir, "x")));
        Assert.Contains("merge_method must be linear", e.Message);
        var weighted = Config() with { Models = [new MergeModel("good1", new Dictionary<string, ParameterSetting> { ["weight"] = ParameterSetting.Of(2.0) }), new MergeModel("bad")] };
        e = Assert.Throws<MergeException>(() => GreedySoup.Run(weighted, _ => 0, Path.Combine(dir, "x")));
        Assert.Contains("'good1'", e.Message);
    }

    [Fact]
    public void The_cli_prints_each_step_and_what_it_kept()
    {
        var r = CliRun.Run(["merge-models", "--config", Path.Combine(dir, "soup.yaml"), "--eval-file", evalFile, "--out", Path.Combine(dir, "cli-soup"), "-q"]);
        Assert.True(r.Code == 0, r.Err);
        Assert.Contains("bad: held-out loss", r.Out);
        Assert.Contains("soup + bad: loss", r.Out);
        Assert.Contains("left out", r.Out);
        Assert.Matches(@"greedy soup kept \d of 4", r.Out);
        Assert.True(File.Exists(Path.Combine(dir, "cli-soup", "model.safetensors")));
    }
}
