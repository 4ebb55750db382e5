using System.Diagnostics;
using PeftSharp.Data;
using PeftSharp.IO;
using PeftSharp.Training;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Training;

/// <summary>
/// What a run does to its output folder and how it stops: no silent overwrite of an earlier run, a damaged checkpoint
/// refused by file and field before libtorch sees it, divergence and collapse reported with a checkpoint that is
/// really good, stale temporary folders removed.
/// </summary>
[Collection(SerialRng.Name)]
public class RunSafetyTests
{
    static BatchSource Data(int count) =>
        new(Enumerable.Range(0, count).Select(i => ExampleTokenizer.Tokenize(new Example(ExampleKind.Text, default) { Text = $"abc{i % 7}abc{i % 7}" },
            Tests.Data.ToyTokenizer.Functions(), 16)).ToList(), padId: 0);

    static TrainingOptions Options(string dir) => new()
    {
        OutputDir = dir, LearningRate = 0.05, PerDeviceTrainBatchSize = 4, MaxSteps = 6, WarmupSteps = 1, Seed = 3,
        LrSchedulerType = "constant_with_warmup", SaveSteps = 2,
    };

    static readonly TrainerHooks Quiet = new() { HandleCtrlC = false };

    static TrainingResult Run(TrainingOptions o, Func<ToyLm, Func<Batch, Tensor>>? loss = null)
    {
        using var model = new ToyLm(seed: 1);
        return Trainer.Run(model.AsTrainable(loss?.Invoke(model)), Data(24), null, o, Quiet);
    }

    [Fact]
    public void A_new_run_does_not_write_over_an_earlier_one_unless_told_to()
    {
        using var dir = new TempDir();
        Run(Options(dir.Path));
        var metrics = File.ReadAllText(Path.Combine(dir.Path, Trainer.MetricsFile));
        var checkpoint4 = File.ReadAllBytes(Path.Combine(dir.Path, "checkpoint-4", TrainerCheckpoint.TrainableFile));

        var e = Assert.Throws<ArgumentException>(() => Run(Options(dir.Path) with { LearningRate = 0.01 }));
        Assert.Contains("already holds a training run (3 checkpoint(s), the newest checkpoint-6)", e.Message);
        Assert.Contains("--resume", e.Message);
        Assert.Contains("--overwrite-output-dir", e.Message);
        Assert.Equal(metrics, File.ReadAllText(Path.Combine(dir.Path, Trainer.MetricsFile)));
        Assert.Equal(checkpoint4, File.ReadAllBytes(Path.Combine(dir.Path, "checkpoint-4", TrainerCheckpoint.TrainableFile)));

        // Overwriting starts over: a shorter run leaves none of the old run's checkpoints for --resume latest to pick.
        var again = Run(Options(dir.Path) with { MaxSteps = 2, OverwriteOutputDir = true });
        Assert.Equal(StopReason.Completed, again.Reason);
        Assert.Equal([2], TrainerCheckpoint.All(dir.Path).Select(c => c.Step));
        Assert.Equal(2, File.ReadAllLines(Path.Combine(dir.Path, Trainer.MetricsFile)).Length);
    }

    [Fact]
    public void Divergence_names_a_checkpoint_with_finite_weights_and_resume_may_lower_the_learning_rate()
    {
        using var dir = new TempDir();
        // Step 1 has rate 0 (warmup): checkpoint-1 holds the initial weights. Step 2 moves every weight by ~1e30, finite
        // but useless; step 3's loss (which squares a weight, as a deeper model multiplies them) overflows. checkpoint-2
        // is the newest, but its weights are the ones that diverged.
        var diverged = Run(Options(dir.Path) with { LearningRate = 1e30, SaveSteps = 1 }, m => b => m.Loss(b) + (m.W * m.W).sum() * 1e-30f);
        Assert.Equal(StopReason.NonFinite, diverged.Reason);
        Assert.Equal(2, diverged.GlobalStep);
        Assert.EndsWith("checkpoint-2", diverged.LastCheckpoint);
        var good = Path.Combine(dir.Path, "checkpoint-1");
        Assert.Contains($"The last good checkpoint (finite weights, which gave a finite loss) is {good}", diverged.Message);

        var messages = new List<string>();
        using var model = new ToyLm(seed: 1);
        var resumed = Trainer.Run(model.AsTrainable(), Data(24), null, Options(dir.Path) with { LearningRate = 0.02, ResumeFromCheckpoint = good },
            Quiet with { Progress = new Messages(messages) });
        Assert.Equal(StopReason.Completed, resumed.Reason);
        Assert.Equal(Enumerable.Repeat(0.02, 5), resumed.Steps.Select(s => s.LearningRate)); // after warmup: the new rate, the same factor 1
        Assert.Contains(messages, m => m.StartsWith("resuming with learning rate 0.02 instead of 1E+30", StringComparison.Ordinal));
        // The later checkpoints are the resumed run's now: their state records the new rate.
        Assert.Equal(0.02, TrainerCheckpoint.ReadState(Path.Combine(dir.Path, "checkpoint-2")).Schedule.BaseLr);
    }

    [Fact]
    public void The_last_finite_checkpoint_skips_one_whose_weights_are_not_finite()
    {
        using var dir = new TempDir();
        Run(Options(dir.Path));
        using (var inf = full(3, float.PositiveInfinity))
            SafetensorsWriter.Save(Path.Combine(dir.Path, "checkpoint-4", TrainerCheckpoint.TrainableFile), new Dictionary<string, Tensor> { ["w"] = inf });
        Assert.EndsWith("checkpoint-2", TrainerCheckpoint.LastFinite(dir.Path, beforeStep: 6));
        Assert.EndsWith("checkpoint-6", TrainerCheckpoint.LastFinite(dir.Path, beforeStep: 7));
    }

    [Fact]
    public void A_run_whose_gradient_stays_zero_stops_as_collapsed_without_an_adapter()
    {
        using var dir = new TempDir();
        // A loss that no longer depends on the weights: what a saturated bfloat16 model gives (uniform logits, ln(vocab)).
        var result = Run(Options(dir.Path) with { MaxSteps = 12 }, m => b => m.Loss(b) * 0 + Math.Log(m.Vocab));
        Assert.Equal(StopReason.Collapsed, result.Reason);
        Assert.Equal(Trainer.CollapsePatience, result.GlobalStep);
        Assert.Contains("gradient norm has been exactly 0 for 5 step(s)", result.Message);
        Assert.Null(result.AdapterDir);
        Assert.False(File.Exists(Path.Combine(dir.Path, "adapter_model.safetensors")));
        Assert.Contains("\"event\":\"collapsed\"", File.ReadAllLines(result.MetricsFile!)[^1]);

        // A short run that never had a gradient is collapsed too, not "trained".
        using var dir2 = new TempDir();
        Assert.Equal(StopReason.Collapsed, Run(Options(dir2.Path) with { MaxSteps = 2 }, m => b => m.Loss(b) * 0).Reason);
    }

    [Fact]
    public void A_typed_zero_warmup_wins_over_the_default_ratio()
    {
        using var dir = new TempDir();
        var o = new TrainingOptions().With("--warmup-steps", "0") with
        {
            OutputDir = null, LearningRate = 0.05, PerDeviceTrainBatchSize = 4, MaxSteps = 3, LrSchedulerType = "linear",
        };
        Assert.Equal(0.05, o.WarmupRatio);
        Assert.Equal(0.05, Run(o).Steps[0].LearningRate);                      // no warmup: step 1 at the full rate
        Assert.Equal(0.0, Run(o with { WarmupSteps = null }).Steps[0].LearningRate); // the ratio's 1 step of warmup
        var file = TrainingOptionsFile.Load(new TempDir().File("c.yaml", "warmup_steps: 0\n"));
        Assert.Equal(0, file.WarmupSteps);
    }

    [Theory]
    [InlineData("global_step", "999", "field 'global_step' is 999, but it must be in [0, total_steps = 4]")]
    [InlineData("micro_batch_in_epoch", "-2", "field 'micro_batch_in_epoch' is -2, but it must not be negative")]
    [InlineData("epoch", "40", "fields 'epoch' = 40, 'micro_batch_in_epoch' = 4 do not match 'global_step' = 4")]
    [InlineData("global_step", "\"four\"", "not a valid trainer state at 'global_step'")]
    [InlineData(null, null, "not a valid trainer state")]
    public void A_damaged_trainer_state_is_refused_by_file_and_field(string? field, string? value, string expected)
    {
        using var dir = new TempDir();
        Run(Options(dir.Path) with { MaxSteps = 4 });
        var path = Path.Combine(dir.Path, "checkpoint-4", TrainerCheckpoint.StateFile);
        var json = File.ReadAllText(path);
        File.WriteAllText(path, field is null ? json[..(json.Length / 2)]
            : System.Text.RegularExpressions.Regex.Replace(json, $"\"{field}\": [^,\\n]+", $"\"{field}\": {value}"));
        AssertRefusedWithoutWriting(dir.Path, path, expected);
    }

    [Fact]
    public void A_damaged_rng_state_or_optimizer_step_is_refused_before_libtorch_reads_it()
    {
        using var dir = new TempDir();
        Run(Options(dir.Path) with { MaxSteps = 4 });
        var rng = Path.Combine(dir.Path, "checkpoint-4", TrainerCheckpoint.RngFile);
        using (var wrongSize = zeros(100, ScalarType.Byte))
            SafetensorsWriter.Save(rng, new Dictionary<string, Tensor> { ["cpu"] = wrongSize });
        AssertRefusedWithoutWriting(dir.Path, rng, "'cpu' is Byte[100] but the CPU generator's state is Byte[");

        using var dir2 = new TempDir();
        Run(Options(dir2.Path) with { MaxSteps = 4 });
        var optimizer = Path.Combine(dir2.Path, "checkpoint-4", TrainerCheckpoint.OptimizerFile);
        Dictionary<string, Tensor> state;
        using (var f = SafetensorsFile.Open(optimizer)) state = f.LoadAll();
        state["w.step"] = tensor(4.0f);
        SafetensorsWriter.Save(optimizer, state);
        foreach (var t in state.Values) t.Dispose();
        AssertRefusedWithoutWriting(dir2.Path, optimizer, "'w.step' is Float32[] but a step count is one int64");
    }

    static void AssertRefusedWithoutWriting(string dir, string file, string expected)
    {
        var metrics = File.ReadAllText(Path.Combine(dir, Trainer.MetricsFile));
        var e = Assert.ThrowsAny<Exception>(() => Run(Options(dir) with { MaxSteps = 4, ResumeFromCheckpoint = "latest" }));
        Assert.True(e is InvalidDataException, e.ToString());
        Assert.StartsWith(file + ":", e.Message);
        Assert.Contains(expected, e.Message);
        Assert.Equal(metrics, File.ReadAllText(Path.Combine(dir, Trainer.MetricsFile)));
    }

    [Fact]
    public void Temporary_checkpoints_of_dead_processes_are_removed_and_those_of_live_ones_kept()
    {
        using var dir = new TempDir();
        using var finished = Process.Start(new ProcessStartInfo("true"))!;
        finished.WaitForExit();
        using var alive = Process.Start(new ProcessStartInfo("sleep", "60"))!;
        try
        {
            var dead = Directory.CreateDirectory(Path.Combine(dir.Path, $".checkpoint-4.tmp{finished.Id}")).FullName;
            var live = Directory.CreateDirectory(Path.Combine(dir.Path, $".checkpoint-4.tmp{alive.Id}")).FullName;
            File.WriteAllText(Path.Combine(dead, "trainable.safetensors"), "half-written");
            Run(Options(dir.Path) with { MaxSteps = 2 });
            Assert.False(Directory.Exists(dead));
            Assert.True(Directory.Exists(live));
        }
        finally
        {
            alive.Kill();
            alive.WaitForExit();
        }
    }

    sealed class Messages(List<string> into) : IProgressSink
    {
        public void Start(TrainingPlan plan) { }
        public void Step(StepRecord r) { }
        public void Eval(EvalRecord eval) { }
        public void Message(string text) => into.Add(text);
        public void End(TrainingResult result) { }
    }
}
