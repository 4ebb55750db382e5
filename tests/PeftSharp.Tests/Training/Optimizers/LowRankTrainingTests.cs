using PeftSharp.IO;
using PeftSharp.Peft;
using PeftSharp.Training;

namespace PeftSharp.Tests.Training.Optimizers;

/// <summary><c>peftsharp train --method lora --optim X</c>: trains through the recipe, and a resumed run ends where a straight one does.</summary>
[Collection(SerialRng.Name)]
public class LowRankTrainingTests
{
    [Theory]
    [InlineData("loraplus")]
    [InlineData("lorafa")]
    [InlineData("lorapro")]
    public void Trains_through_the_recipe_and_resumes_to_the_straight_runs_adapter(string optim)
    {
        var dir = Path.Combine(IO.SafetensorsTests.TempDir(), "optim-" + optim);
        var options = new TrainingOptions
        {
            Method = "lora", Optim = optim, MaxSteps = 4, SaveSteps = 2, MaxLength = 24, PerDeviceTrainBatchSize = 2,
            LearningRate = 1e-3, WarmupRatio = 0, SampleMaxNewTokens = 1, LoraR = 4, EvalRatio = 0,
            LoraTargetModules = ["q_proj", "v_proj", "embed_tokens"], OutputDir = Path.Combine(dir, "straight"),
            TrainFile = Repo.Path("data", "first-run", "eval.jsonl"), EvalFile = null,
        };
        var straight = Run(options);
        Assert.All(straight.Result.Steps, s => Assert.True(double.IsFinite(s.Loss)));
        var resumed = Run(options with { OutputDir = Path.Combine(dir, "resumed"), ResumeFromCheckpoint = Path.Combine(dir, "straight", "checkpoint-2") });
        Assert.Equal(straight.Result.Steps.Skip(2).Select(s => s.Loss), resumed.Result.Steps.Select(s => s.Loss));

        using var a = SafetensorsFile.Open(Path.Combine(dir, "straight", PeftModel.WeightsFile));
        using var b = SafetensorsFile.Open(Path.Combine(dir, "resumed", PeftModel.WeightsFile));
        using var mid = SafetensorsFile.Open(Path.Combine(dir, "straight", "checkpoint-2", PeftModel.WeightsFile));
        Assert.Equal(a.Names.Order(), b.Names.Order());
        foreach (var name in a.Names)
        {
            using var x = a.Load(name);
            using var y = b.Load(name);
            using var m = mid.Load(name);
            Assert.True(Numerics.Same(x, y), $"{name} differs after resuming");
            // LoRA-FA never moves A; nor B of an embedding, whose A PEFT initialises to zero (so B's gradient s g A^T is
            // zero too, in PEFT as here). Everything else learns between steps 2 and 4.
            var frozen = optim == "lorafa" && (name.Contains("_A") || name.Contains("embed_tokens"));
            Assert.True(frozen == Numerics.Same(m, x), frozen ? $"{name} moved under LoRA-FA" : $"{name} did not move");
        }
    }

    [Fact]
    public void Bad_settings_are_refused_naming_the_option()
    {
        var e = Assert.Throws<ArgumentException>(() => new TrainingOptions { Optim = "loraplus", LoraplusLrRatio = 0 }.Validate());
        Assert.Contains("option loraplus_lr_ratio must be a positive number", e.Message);
        e = Assert.Throws<ArgumentException>(() => new TrainingOptions { Optim = "lorapro", Amsgrad = true }.Validate());
        Assert.Contains("option amsgrad is not supported by optim lorapro", e.Message);
        // DoRA's update is not s B A: LoRA-FA and LoRA-Pro have nothing to work on, and say so.
        var options = new TrainingOptions { Method = "dora", Optim = "lorafa", MaxSteps = 1, MaxLength = 16, OutputDir = null, SampleMaxNewTokens = 0, SamplePrompt = "" };
        e = Assert.Throws<ArgumentException>(() => Run(options));
        Assert.Contains("option optim lorafa works on LoRA layers", e.Message);
    }

    static FineTuneReport Run(TrainingOptions o) =>
        FineTune.Run(o, Repo.Path("models", "tinycode-3m"), Repo.Path("data", "first-run"), new TrainerHooks { HandleCtrlC = false });
}
