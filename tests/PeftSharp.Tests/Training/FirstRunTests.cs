using PeftSharp.Training;

namespace PeftSharp.Tests.Training;

[Collection(SerialRng.Name)]
public class FirstRunTests
{
    [Fact]
    public void A_short_first_run_lowers_held_out_loss_on_the_bundled_data()
    {
        var output = Path.Combine(IO.SafetensorsTests.TempDir(), "run");
        var options = new TrainingOptions
        {
            MaxSteps = 6, LearningRate = 3e-3, MaxLength = 64, PerDeviceTrainBatchSize = 4, PerDeviceEvalBatchSize = 16,
            WarmupRatio = 0, LrSchedulerType = "constant", OutputDir = output, SampleMaxNewTokens = 4,
        };
        var report = FineTune.Run(options, Repo.Path("models", "tinycode-3m"), Repo.Path("data", "first-run"), new TrainerHooks { HandleCtrlC = false });
        Assert.Equal(StopReason.Completed, report.Result.Reason);
        Assert.NotNull(report.Before);
        Assert.NotNull(report.After);
        Assert.True(report.After!.Loss < report.Before!.Loss - 0.02, $"held-out loss {report.Before.Loss:F4} -> {report.After.Loss:F4}");
        Assert.True(File.Exists(Path.Combine(output, "adapter_model.safetensors")));
        Assert.True(File.Exists(Path.Combine(output, "adapter_config.json")));
        Assert.NotNull(report.SampleAfter);
    }
}
