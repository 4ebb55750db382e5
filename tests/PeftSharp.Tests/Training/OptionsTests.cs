using PeftSharp.Training;

namespace PeftSharp.Tests.Training;

public class OptionsTests
{
    [Fact]
    public void Yaml_accepts_snake_and_kebab_keys_aliases_and_lists()
    {
        using var dir = new TempDir();
        var path = dir.File("run.yaml", """
            learning_rate: 1e-4
            per-device-train-batch-size: 4
            num_epochs: 2.5
            lr_scheduler: linear
            lora_target_modules: [q_proj, v_proj]
            packing: true
            no_shuffle: true
            """);
        var o = TrainingOptionsFile.Load(path);
        Assert.Equal(1e-4, o.LearningRate);
        Assert.Equal(4, o.PerDeviceTrainBatchSize);
        Assert.Equal(2.5, o.NumTrainEpochs);
        Assert.Equal("linear", o.LrSchedulerType);
        Assert.Equal(["q_proj", "v_proj"], o.LoraTargetModules);
        Assert.True(o.Packing);
        Assert.False(o.Shuffle);
        Assert.Equal(new TrainingOptions().MaxGradNorm, o.MaxGradNorm);   // untouched keys keep defaults
    }

    [Fact]
    public void Json_config_then_command_line_overrides()
    {
        using var dir = new TempDir();
        var path = dir.File("run.json", """{ "learning-rate": 0.001, "seed": 3, "warmup_ratio": 0.1, "eval_file": null }""");
        var o = TrainingOptionsFile.Load(path)
            .With("--learning-rate", "2e-4")
            .With("--batch-size", "16")
            .With("--resume", null)
            .With("--lora-target-modules", "q_proj,k_proj");
        Assert.Equal(2e-4, o.LearningRate);
        Assert.Equal(3, o.Seed);
        Assert.Equal(0.1, o.WarmupRatio);
        Assert.Equal(16, o.PerDeviceTrainBatchSize);
        Assert.Equal("latest", o.ResumeFromCheckpoint);
        Assert.Equal(["q_proj", "k_proj"], o.LoraTargetModules);
    }

    [Fact]
    public void Data_options_follow_the_training_options()
    {
        var o = new TrainingOptions { Task = "seq_cls", MaxLength = 64, Packing = false, EvalFile = "e.csv", Seed = 5 };
        var d = o.DataOptions("bundled.jsonl");
        Assert.Equal("bundled.jsonl", d.TrainPath);
        Assert.Equal("label", d.LabelField);
        Assert.Equal((64, "e.csv", 5L), (d.MaxLength, d.EvalPath, d.Seed));
        Assert.Null(new TrainingOptions { TrainFile = "t.jsonl" }.DataOptions().LabelField);
    }

    [Fact]
    public void Unknown_or_malformed_options_are_named()
    {
        var e = Assert.Throws<ArgumentException>(() => new TrainingOptions().With("--learning-rat", "1"));
        Assert.Contains("unknown option '--learning-rat'; did you mean 'learning_rate'?", e.Message);
        e = Assert.Throws<ArgumentException>(() => new TrainingOptions().With("seed", "abc"));
        Assert.Contains("option seed: 'abc' is not a whole number", e.Message);
        e = Assert.Throws<ArgumentException>(() => (new TrainingOptions() with { LrSchedulerType = "polynomial" }).Validate());
        Assert.Contains("lr_scheduler_type must be one of constant, constant_with_warmup, linear, cosine", e.Message);
        e = Assert.Throws<ArgumentException>(() => (new TrainingOptions() with { Optim = "sgd" }).Validate());
        Assert.Contains("option optim must be auto, adamw_torch, adamw_torch_fused, loraplus, lorafa or lorapro", e.Message);
    }

    [Fact]
    public void Device_values_are_checked_and_named()
    {
        Assert.Equal(TorchSharp.DeviceType.CPU, Devices.Parse("cpu").type);
        var e = Assert.Throws<ArgumentException>(() => Devices.Parse("tpu", "option device"));
        Assert.Contains("option device 'tpu' is not one of auto, cpu, cuda or cuda:N", e.Message);
        if (!TorchSharp.torch.cuda.is_available())
        {
            Assert.Equal(TorchSharp.DeviceType.CPU, Devices.Parse("auto").type);
            e = Assert.Throws<ArgumentException>(() => Devices.Parse("cuda:0"));
            Assert.Contains("--device cuda:0: no CUDA device is usable", e.Message);
        }
    }

    [Fact]
    public void Layerwise_methods_refuse_the_fused_optimizer_by_name()
    {
        var model = new TrainableModel([("w", new TorchSharp.Modules.Parameter(TorchSharp.torch.zeros(2)))], _ => TorchSharp.torch.zeros(1), _ => { })
        {
            FixedParameterSet = false,
        };
        var data = PeftSharp.Data.BatchSource.FromInputIds(TorchSharp.torch.ones(2, 4, dtype: TorchSharp.torch.ScalarType.Int64));
        var o = new TrainingOptions { Optim = "adamw_torch_fused", OutputDir = null, MaxSteps = 1 };
        var e = Assert.Throws<ArgumentException>(() => Trainer.Run(model, data, null, o, new TrainerHooks { HandleCtrlC = false }));
        Assert.Contains("optim adamw_torch_fused needs a fixed set of trainable parameters", e.Message);
    }

    [Fact]
    public void Every_option_round_trips_through_its_json()
    {
        using var dir = new TempDir();
        var o = new TrainingOptions { LearningRate = 3e-4, LoraTargetModules = ["a", "b"], EvalFile = "e.jsonl", Packing = true };
        var path = dir.File("o.json", TrainingOptionsFile.ToJson(o));
        var back = TrainingOptionsFile.Load(path);
        Assert.Equal(TrainingOptionsFile.ToJson(o), TrainingOptionsFile.ToJson(back));
        Assert.Contains("\"per_device_train_batch_size\"", File.ReadAllText(path));
    }

    [Fact]
    public void Plain_progress_prints_lines_with_eta()
    {
        var w = new StringWriter();
        var p = new PlainProgress(w, everySteps: 2);
        p.Start(new TrainingPlan(4, 0, 10, 2, 4, null));
        for (var s = 1; s <= 4; s++) p.Step(new StepRecord(s, s / 4.0, 2.0 / s, 1e-3, 0.5, 1234));
        p.Eval(new EvalRecord(4, 1.5, Math.Exp(1.5), 100));
        var lines = w.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(5, lines.Length);   // header, steps 1, 2, 4, eval
        Assert.StartsWith("step 1/4  loss 2.0000  lr 1.00e-03  1234 tok/s  eta", lines[1]);
        Assert.Equal("eval after step 4: loss 1.5000  perplexity 4.48", lines[4].TrimEnd());
    }

    [Fact]
    public void A_bare_resume_by_any_of_its_names_means_latest_and_a_null_in_a_file_means_no()
    {
        // The CLI passes the canonical key with a null value for a bare --resume.
        Assert.Equal("latest", new TrainingOptions().With("resume_from_checkpoint", null).ResumeFromCheckpoint);
        Assert.Equal("latest", new TrainingOptions().With("--resume-from-checkpoint", null).ResumeFromCheckpoint);
        Assert.Equal("latest", new TrainingOptions().With("--resume", "true").ResumeFromCheckpoint);
        Assert.Null(new TrainingOptions().With("--resume", "false").ResumeFromCheckpoint);
        using var dir = new TempDir();
        Assert.Null(TrainingOptionsFile.Load(dir.File("c.yaml", "resume_from_checkpoint: null\n")).ResumeFromCheckpoint);
        Assert.Equal("out/checkpoint-4", TrainingOptionsFile.Load(dir.File("d.yaml", "resume: out/checkpoint-4\n")).ResumeFromCheckpoint);
    }
}
