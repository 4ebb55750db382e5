using PeftSharp.Data;
using PeftSharp.IO;
using PeftSharp.Training;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Training;

[Collection(SerialRng.Name)]
public class TrainerTests
{
    /// <summary>Short "documents" with a pattern to learn: a run of letters, then the same run again.</summary>
    static BatchSource Data(int count, int seed)
    {
        var rng = new Random(seed);
        var rows = new List<Row>();
        for (var i = 0; i < count; i++)
        {
            var run = new string(Enumerable.Range(0, 3 + rng.Next(5)).Select(_ => (char)('a' + rng.Next(12))).ToArray());
            rows.Add(ExampleTokenizer.Tokenize(new Example(ExampleKind.Text, default) { Text = run + run }, Tests.Data.ToyTokenizer.Functions(), 32));
        }
        return new BatchSource(rows, padId: 0);
    }

    static TrainingOptions Options(string? outDir) => new TrainingOptions
    {
        OutputDir = outDir, LearningRate = 0.05, PerDeviceTrainBatchSize = 4, PerDeviceEvalBatchSize = 8, GradientAccumulationSteps = 2,
        NumTrainEpochs = 3, WarmupSteps = 2, LrSchedulerType = "cosine", WeightDecay = 0.01, MaxGradNorm = 1.0, Seed = 11,
    };

    [Fact]
    public void Training_lowers_the_held_out_loss_and_writes_its_outputs()
    {
        using var dir = new TempDir();
        using var model = new ToyLm(seed: 1) { Dropout = 0.1 };
        var result = Trainer.Run(model.AsTrainable(), Data(40, 1), Data(12, 2), Options(dir.Path), new TrainerHooks { HandleCtrlC = false });

        Assert.Equal(StopReason.Completed, result.Reason);
        Assert.Equal(15, result.TotalSteps);                 // 40 rows / 4 = 10 micro-batches = 5 steps per epoch, 3 epochs
        Assert.Equal(15, result.Steps.Count);
        Assert.True(result.Evals[^1].Loss < result.Evals[0].Loss - 0.5, $"eval loss {result.Evals[0].Loss} -> {result.Evals[^1].Loss}");
        Assert.Equal(Math.Exp(result.Evals[^1].Loss), result.Evals[^1].Perplexity, 10);
        Assert.Equal(0.0, result.Steps[0].LearningRate);     // warmup starts at 0, as transformers does
        Assert.True(File.Exists(Path.Combine(dir.Path, "adapter_model.safetensors")));
        Assert.True(File.Exists(Path.Combine(dir.Path, Trainer.OptionsFile)));

        var lines = File.ReadAllLines(result.MetricsFile!);
        Assert.Equal(15 + 2, lines.Length);                  // one per step + evaluations before and after
        Assert.Contains("\"grad_norm\"", lines[1]);
        Assert.Contains("\"eval_loss\"", lines[^1]);

        var png = File.ReadAllBytes(result.LossCurveFile!);
        Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, png[..4]);
        Assert.Equal(800 * 3 * 480 + 480, PngPixelBytes(png));
    }

    /// <summary>Inflates the IDAT data: a well-formed PNG of W x H RGB has H * (1 + 3W) bytes.</summary>
    static int PngPixelBytes(byte[] png)
    {
        var at = 8;
        using var idat = new MemoryStream();
        while (at < png.Length)
        {
            var len = System.Buffers.Binary.BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(at));
            var type = System.Text.Encoding.ASCII.GetString(png, at + 4, 4);
            if (type == "IDAT") idat.Write(png, at + 8, len);
            at += 12 + len;
        }
        idat.Position = 0;
        using var z = new System.IO.Compression.ZLibStream(idat, System.IO.Compression.CompressionMode.Decompress);
        using var raw = new MemoryStream();
        z.CopyTo(raw);
        return (int)raw.Length;
    }

    [Fact]
    public void Resumed_run_continues_the_same_loss_curve_bit_for_bit()
    {
        using var straightDir = new TempDir();
        using var resumedDir = new TempDir();
        var options = Options(null) with { SaveSteps = 4, EvalSteps = 5 };
        var train = Data(40, 1);
        var eval = Data(12, 2);

        using var straightModel = new ToyLm(seed: 1) { Dropout = 0.2 };
        var straight = Trainer.Run(straightModel.AsTrainable(), train, eval, options with { OutputDir = straightDir.Path }, new TrainerHooks { HandleCtrlC = false });

        // Interrupt after step 6 (between checkpoints: the interruption itself saves), then resume in a fresh model.
        using (var first = new ToyLm(seed: 1) { Dropout = 0.2 })
        using (var cancel = new CancellationTokenSource())
        {
            var stopAt6 = new StopAt(6, cancel);
            var part = Trainer.Run(first.AsTrainable(), train, eval, options with { OutputDir = resumedDir.Path },
                new TrainerHooks { HandleCtrlC = false, Cancel = cancel.Token, Progress = stopAt6 });
            Assert.Equal(StopReason.Interrupted, part.Reason);
            Assert.Equal(6, part.GlobalStep);
            Assert.EndsWith("checkpoint-6", part.LastCheckpoint);
            Assert.Contains("--resume", part.Message);
        }
        using var resumedModel = new ToyLm(seed: 1) { Dropout = 0.2 };
        var resumed = Trainer.Run(resumedModel.AsTrainable(), train, eval, options with { OutputDir = resumedDir.Path, ResumeFromCheckpoint = "latest" },
            new TrainerHooks { HandleCtrlC = false });

        Assert.Equal(StopReason.Completed, resumed.Reason);
        Assert.Equal(straight.Steps.Skip(6).Select(s => s.Loss), resumed.Steps.Select(s => s.Loss));
        Assert.Equal(straight.Steps.Skip(6).Select(s => s.GradNorm), resumed.Steps.Select(s => s.GradNorm));
        Assert.Equal(straight.Evals[^1].Loss, resumed.Evals[^1].Loss);
        foreach (var ((name, a), (_, b)) in straightModel.Parameters.Zip(resumedModel.Parameters))
            Assert.True(Numerics.Same(a, b), $"parameter {name} differs after resume");
        // The metrics file reads as one run: every step once.
        var steps = MetricsLog.Read(resumed.MetricsFile!).Train.Select(p => p.Step).ToList();
        Assert.Equal(Enumerable.Range(1, straight.TotalSteps), steps);
    }

    sealed class StopAt(int step, CancellationTokenSource cancel) : IProgressSink
    {
        public void Start(TrainingPlan plan) { }
        public void Step(StepRecord r) { if (r.Step == step) cancel.Cancel(); }
        public void Eval(EvalRecord eval) { }
        public void Message(string text) { }
        public void End(TrainingResult result) { }
    }

    [Fact]
    public void Nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint()
    {
        using var dir = new TempDir();
        using var model = new ToyLm(seed: 1);
        var calls = 0;
        Tensor Poisoned(Batch b)
        {
            var loss = model.Loss(b);
            // Micro-batches 13 and 14 make step 7 (two per step): poison the first of them.
            return ++calls == 13 ? loss * float.NaN : loss;
        }
        var adapterSaves = 0;
        var trainable = model.AsTrainable(Poisoned) with { SaveAdapter = f => { adapterSaves++; File.WriteAllText(Path.Combine(f, "adapter_config.json"), "{}"); } };
        var result = Trainer.Run(trainable, Data(40, 1), null, Options(dir.Path) with { SaveSteps = 3 }, new TrainerHooks { HandleCtrlC = false });

        Assert.Equal(StopReason.NonFinite, result.Reason);
        Assert.Equal(6, result.GlobalStep);
        Assert.Equal(6, result.Steps.Count);
        Assert.EndsWith("checkpoint-6", result.LastCheckpoint);
        Assert.Contains("loss is NaN at step 7", result.Message);
        // Step 7's loss came from the weights of step 6, so checkpoint-6 is suspect: the last good one is checkpoint-3.
        Assert.Contains($"last good checkpoint (finite weights, which gave a finite loss) is {Path.Combine(dir.Path, "checkpoint-3")}", result.Message);
        Assert.Equal([3, 6], TrainerCheckpoint.All(dir.Path).Select(c => c.Step));
        Assert.Equal(2, adapterSaves);                            // the checkpoints only: no final adapter from a failed run
        Assert.False(File.Exists(Path.Combine(dir.Path, "adapter_config.json")));
        // The poisoned step was not applied: the weights are those of the last good checkpoint.
        using var saved = SafetensorsFile.Open(Path.Combine(result.LastCheckpoint!, TrainerCheckpoint.TrainableFile));
        foreach (var (name, p) in model.Parameters)
        {
            using var t = saved.Load(name);
            Assert.True(Numerics.Same(t, p), name);
        }
        Assert.Contains("\"event\":\"non_finite\"", File.ReadAllLines(result.MetricsFile!)[^1]);
    }

    [Theory]
    [MemberData(nameof(ScheduleAndClipTests.FixtureRuns), MemberType = typeof(ScheduleAndClipTests))]
    public void Sequential_run_on_fixture_data_uses_the_reference_plan_and_learning_rates(string run)
    {
        var (c, lrs, _) = ScheduleAndClipTests.Trace(run);
        using var file = SafetensorsFile.Open(Repo.Fixture("training", run, "data.safetensors"));
        using var ids = file.Load("input_ids");
        var data = BatchSource.FromInputIds(ids);
        using var model = new ToyLm(seed: 1, vocab: 512);
        var seen = new List<long[]>();
        var trainable = model.AsTrainable(b => { seen.Add(b.InputIds[.., 0].data<long>().ToArray()); return model.Loss(b); });
        var options = new TrainingOptions
        {
            OutputDir = null, Shuffle = false, PerDeviceTrainBatchSize = c.BatchSize, GradientAccumulationSteps = c.GradAccum,
            NumTrainEpochs = c.Epochs, LearningRate = c.Lr, WarmupSteps = c.WarmupSteps, LrSchedulerType = "linear",
            WeightDecay = c.WeightDecay, MaxGradNorm = c.MaxGradNorm,
        };
        var result = Trainer.Run(trainable, data, null, options, new TrainerHooks { HandleCtrlC = false });
        Assert.Equal(lrs, result.Steps.Select(s => s.LearningRate));
        // Sequential micro-batches of batch_size rows, epoch after epoch.
        var firstTokens = ids[.., 0].data<long>().ToArray();
        var expected = Enumerable.Range(0, c.Epochs).SelectMany(_ => firstTokens.Chunk(c.BatchSize)).ToList();
        Assert.Equal(expected.Count, seen.Count);
        for (var i = 0; i < seen.Count; i++) Assert.Equal(expected[i], seen[i]);
    }
}
