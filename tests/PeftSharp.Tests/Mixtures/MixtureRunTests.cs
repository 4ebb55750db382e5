using PeftSharp.Data;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Training;
using PeftSharp.Tuners.Poly;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Mixtures;

/// <summary>The mixtures' <c>--method</c> presets train through the real recipe on tinycode-3m, on data they can use.</summary>
[Collection(SerialRng.Name)]
public class MixtureRunTests
{
    /// <summary>Presets that cannot train on plain text (they need task ids or trained adapters): tested here, not in MethodRunTests.</summary>
    public static readonly HashSet<string> OwnData = ["poly", "mhr", "meteora"];

    static string TinyCode => Repo.Path("models", "tinycode-3m");

    /// <summary>Ten short records of the first-run data, task 0 and 1 alternating.</summary>
    internal static string TaskData(TempDir dir)
    {
        var lines = DataReader.Read(Repo.Path("data", "first-run", "eval.jsonl")).Take(10)
            .Select((r, i) => System.Text.Json.JsonSerializer.Serialize(new { text = ((string)r.Fields!["text"]!)[..200], task_id = i % 2 }));
        return dir.File("tasks.jsonl", string.Join("\n", lines));
    }

    static FineTuneReport Train(TrainingOptions o) =>
        FineTune.Run(o, TinyCode, Repo.Path("data", "first-run"), new TrainerHooks { HandleCtrlC = false });

    // "poly" is the same preset with n_splits = 1; one run keeps the suite short.
    [Fact]
    public void Mhr_trains_on_task_id_data_saves_and_reloads()
    {
        using var dir = new TempDir();
        var output = dir.Combine("out");
        var report = Train(new TrainingOptions
        {
            Method = "mhr", MaxSteps = 3, MaxLength = 32, PerDeviceTrainBatchSize = 4, LearningRate = 1e-2, WarmupRatio = 0,
            OutputDir = output, SampleMaxNewTokens = 2, LoraR = 4, TrainFile = TaskData(dir), EvalRatio = 0.2,
        });
        Assert.Equal(StopReason.Completed, report.Result.Reason);
        Assert.NotNull(report.SampleAfter);
        var back = PeftModel.FromPretrained(AutoModel.Load(TinyCode), output);
        var config = Assert.IsType<PolyConfig>(back.Configs["default"]);
        Assert.Equal(4, config.NSplits);
        // Training moved the routing away from its ±1e-3 start, so the tasks now mix their skills differently.
        using var _ = no_grad();
        var ids = randint(2, 100, [1, 8]);
        var task0 = back.Forward(ModelInputs.Ids(ids) with { TaskIds = tensor(new long[] { 0 }) });
        var task1 = back.Forward(ModelInputs.Ids(ids) with { TaskIds = tensor(new long[] { 1 }) });
        Assert.True(Numerics.MaxAbsDiff(task0, task1) > 1e-6, "the two tasks' routings did not diverge in training");
    }
}
