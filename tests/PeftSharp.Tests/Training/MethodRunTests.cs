using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Training;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Training;

/// <summary>Every <c>--method</c> trains through the real recipe on tinycode-3m and saves an adapter that loads back.</summary>
[Collection(SerialRng.Name)]
public class MethodRunTests
{
    // graft adapters come from Grafting.Learn, not from training; mixtures that need task ids or trained adapters run in
    // Mixtures/MixtureRunTests on data of their own.
    public static TheoryData<string> AllMethods => new(Methods.Names.Where(m => m is not ("bitfit" or "graft") && !Mixtures.MixtureRunTests.OwnData.Contains(m)));

    [Fact]
    public void Bitfit_on_a_bias_free_llama_says_there_is_nothing_to_train()
    {
        var options = new TrainingOptions { Method = "bitfit", MaxSteps = 1, MaxLength = 32, OutputDir = null };
        var e = Assert.Throws<NotSupportedException>(() =>
            FineTune.Run(options, Repo.Path("models", "tinycode-3m"), Repo.Path("data", "first-run"), new TrainerHooks { HandleCtrlC = false }));
        Assert.Contains("nothing to train", e.Message);
    }

    [Theory]
    [MemberData(nameof(AllMethods))]
    public void Method_trains_saves_and_reloads(string method)
    {
        var output = Path.Combine(IO.SafetensorsTests.TempDir(), method);
        var options = new TrainingOptions
        {
            Method = method, MaxSteps = 2, MaxLength = 32, PerDeviceTrainBatchSize = 2, PerDeviceEvalBatchSize = 32,
            LearningRate = 1e-3, WarmupRatio = 0, OutputDir = output, SampleMaxNewTokens = 2, LoraR = 4,
            TrainFile = Repo.Path("data", "first-run", "eval.jsonl"), EvalRatio = 0.2,
            Density = method == "s2ft" ? 1 : new TrainingOptions().Density,   // S²FT needs at least one head per layer
        };
        var report = FineTune.Run(options, Repo.Path("models", "tinycode-3m"), Repo.Path("data", "first-run"), new TrainerHooks { HandleCtrlC = false });
        Assert.Equal(StopReason.Completed, report.Result.Reason);
        Assert.All(report.Result.Steps, s => Assert.True(double.IsFinite(s.Loss)));
        Assert.True(double.IsFinite(report.After!.Loss));
        var reloaded = PeftModel.FromPretrained(AutoModel.Load(Repo.Path("models", "tinycode-3m")), output);
        Assert.Single(reloaded.Configs);
    }

    [Fact]
    public void AdaLora_prunes_ranks_during_a_training_run()
    {
        var output = Path.Combine(IO.SafetensorsTests.TempDir(), "adalora");
        var options = new TrainingOptions
        {
            Method = "adalora", MaxSteps = 10, MaxLength = 32, PerDeviceTrainBatchSize = 2, LearningRate = 1e-2, WarmupRatio = 0,
            OutputDir = output, SampleMaxNewTokens = 1, LoraR = 2, EvalRatio = 0, EvalFile = null,
        };
        FineTune.Run(options, Repo.Path("models", "tinycode-3m"), Repo.Path("data", "first-run"), new TrainerHooks { HandleCtrlC = false });
        using var file = PeftSharp.IO.SafetensorsFile.Open(Path.Combine(output, PeftModel.WeightsFile));
        var e = file.Names.Where(n => n.EndsWith("lora_E")).Select(n => file.Load(n)).ToList();
        long kept = e.Sum(t => t.ne(0).sum().item<long>()), total = e.Sum(t => t.numel());
        Assert.True(kept < total, $"AdaLoRA kept {kept} of {total} singular values: nothing was pruned");
    }
}
