using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using PeftSharp.Data;
using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Training;
using PeftSharp.Tuners;
using PeftSharp.Tuners.Lora;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Benchmarks;

/// <summary>
/// <c>gpu-train</c>: LoRA training throughput on a Llama-shaped model through the library's own path (model from a
/// <see cref="ModelConfig"/>, bfloat16 base, <see cref="PeftModel.Create"/> with r=16 alpha=32 on all linear layers and
/// float32 adapter weights, <see cref="Trainer.Run"/> with fused AdamW and gradient clipping at 1.0, optionally gradient
/// checkpointing), timed over
/// <c>--steps</c> after <c>--warmup-steps</c> with the device synchronized at both ends. benchmarks/gpu/run.sh runs
/// it beside benchmarks/python/peft_bench.py, which does the same in Python PEFT and prints the same RESULT line.
/// Peak GPU memory is measured from outside, the same way for both (benchmarks/python/gpu_mem.py).
/// </summary>
internal static class GpuTrainBenchmark
{
    public static int Run(string[] argv)
    {
        GpuTrainArgs a;
        try { a = GpuTrainArgs.Parse(argv); }
        catch (Exception e) when (e is ArgumentException or FormatException)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 2;
        }
        try { return Train(a); }
        catch (Exception e) when (Environment.GetEnvironmentVariable("PEFTSHARP_DEBUG") != "1")
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 1;
        }
    }

    static int Train(GpuTrainArgs a)
    {
        var device = torch.device(a.Device);
        if (device.type == DeviceType.CUDA) torch.InitializeDeviceType(DeviceType.CUDA); // says why when CUDA is unusable
        var dtype = a.Bf16 ? ScalarType.BFloat16 : ScalarType.Float32;
        torch.manual_seed(a.Seed);

        // 1. The model and its adapter: random ones of the config's shape, or the ones peft_bench.py wrote (same init).
        var (peft, shape) = a.Init is null ? Fresh(a, device, dtype) : FromInit(a, device, dtype);
        Console.WriteLine($"gpu-train {a.Shape.Name} on {a.Device}, base {dtype}: {shape.Describe()}");
        Console.WriteLine(peft.TrainableParametersSummary());
        // Per decoder layer, as transformers' gradient_checkpointing_enable (use_reentrant=False) in peft_bench.py.
        peft.Base.GradientCheckpointing = shape.Checkpointing;

        // 2. The data: a [N, T] token file (every row trained on every token), or random tokens.
        var train = LoadData(a, shape);

        // 3. Train, timing the steps after warm-up.
        var options = new TrainingOptions
        {
            MaxSteps = a.TotalSteps, PerDeviceTrainBatchSize = shape.Batch, LearningRate = a.LearningRate,
            LrSchedulerType = "constant", WarmupSteps = 0, WarmupRatio = 0, WeightDecay = 0, MaxGradNorm = 1.0,
            Shuffle = false, Seed = a.Seed, OutputDir = null, Bf16 = a.Bf16, GradientCheckpointing = shape.Checkpointing,
            LoraR = 16, LoraAlpha = 32, LoraDropout = 0, LoggingSteps = 0,
            Optim = a.Optim,
        };
        var timer = new StepTimer(device, a.WarmupSteps, a.TotalSteps);
        var result = Trainer.Run(Objectives.ForPeft(peft), train, null, options,
            new TrainerHooks { Progress = timer, HandleCtrlC = false });
        if (result.Reason != StopReason.Completed)
        {
            Console.Error.WriteLine($"error: {result.Message}");
            return 1;
        }

        // 4. Report: one line per step, then the RESULT line run.sh reads (peft_bench.py prints the same fields).
        var losses = result.Steps.Select(s => s.Loss).ToList();
        for (int i = 0; i < losses.Count; i++) Console.WriteLine($"step {i + 1} loss {losses[i].ToString("F6", CultureInfo.InvariantCulture)}");
        long tokensPerStep = (long)shape.Batch * shape.Seq;
        double seconds = timer.Seconds;
        double tokensPerSecond = tokensPerStep * a.Steps / seconds;
        Console.WriteLine(string.Join('\t', "RESULT", "ours", a.Shape.Name, F(tokensPerSecond), a.Steps.ToString(CultureInfo.InvariantCulture),
            F(seconds), F(losses[0]), F(losses[^1])));
        if (a.LossesOut is not null)
            File.WriteAllText(a.LossesOut, JsonSerializer.Serialize(new { impl = "ours", config = a.Shape.Name, losses }));
        return 0;
    }

    static string F(double x) => x.ToString("R", CultureInfo.InvariantCulture);

    static (PeftModel, GpuShape) Fresh(GpuTrainArgs a, Device device, ScalarType dtype)
    {
        PretrainedModel model;
        using (no_grad())
        {
            model = AutoModel.Create(a.Shape.ToModelConfig(), dtype);
            if (device.type != DeviceType.CPU) model.to(device);
            // transformers' LlamaPreTrainedModel init: matrices (linear and embedding) from N(0, 0.02), norms at one.
            foreach (var p in model.parameters())
                if (p.dim() >= 2) p.normal_(0, 0.02);
        }
        return (PeftModel.Create(model, LoraBenchConfig()), a.Shape);
    }

    /// <summary>LoRA as the issue asks: r=16, alpha=32, no dropout, every linear layer but the head; PEFT's default init.</summary>
    internal static LoraConfig LoraBenchConfig() => new()
    {
        R = 16, LoraAlpha = 32, LoraDropout = 0, TargetModules = ModuleSelector.Of(["all-linear"]), TaskType = "CAUSAL_LM",
    };

    /// <summary>
    /// The folder peft_bench.py <c>init</c> writes: <c>base/</c> (config.json + bfloat16 safetensors, random init),
    /// <c>adapter/</c> (PEFT save_pretrained of the freshly initialised LoRA), <c>data.safetensors</c>. The model's
    /// shape comes from base/config.json; batch, sequence and checkpointing still from the options.
    /// </summary>
    static (PeftModel, GpuShape) FromInit(GpuTrainArgs a, Device device, ScalarType dtype)
    {
        var baseDir = Path.Combine(a.Init!, "base");
        var model = AutoModel.Load(baseDir, dtype, device);
        var peft = PeftModel.FromPretrained(model, Path.Combine(a.Init!, "adapter"), isTrainable: true);
        var c = model.Config;
        var shape = a.Shape with
        {
            Hidden = c.HiddenSize, Layers = c.NumLayers, Heads = c.NumHeads, KvHeads = c.NumKvHeads, Mlp = c.IntermediateSize, Vocab = c.VocabSize,
            Tied = c.TieWordEmbeddings,
        };
        return (peft, shape);
    }

    static BatchSource LoadData(GpuTrainArgs a, GpuShape shape)
    {
        long rows = (long)shape.Batch * a.TotalSteps;
        if (a.DataFile is not { } path)
        {
            using var random = randint(0, shape.Vocab, [rows, shape.Seq], dtype: ScalarType.Int64);
            return BatchSource.FromInputIds(random);
        }
        using var file = SafetensorsFile.Open(path);
        using var ids = file.Load("input_ids");
        if (ids.dim() != 2 || ids.shape[0] < rows || ids.shape[1] != shape.Seq)
            throw new InvalidDataException($"{path}: input_ids is [{string.Join(",", ids.shape)}] but {a.TotalSteps} steps of batch " +
                $"{shape.Batch} x {shape.Seq} need at least [{rows},{shape.Seq}]: pass --batch/--seq/--steps that fit the file");
        using var used = ids.slice(0, 0, rows, 1);
        return BatchSource.FromInputIds(used);
    }

    /// <summary>Times the steps after warm-up, the device synchronized at both ends, and keeps nothing else.</summary>
    sealed class StepTimer(Device device, int warmupSteps, int totalSteps) : IProgressSink
    {
        readonly Stopwatch clock = new();
        public double Seconds => clock.Elapsed.TotalSeconds;

        public void Start(TrainingPlan plan)
        {
            if (warmupSteps == 0) Mark(start: true);
        }

        public void Step(StepRecord step)
        {
            if (step.Step == warmupSteps) Mark(start: true);
            if (step.Step == totalSteps) Mark(start: false);
        }

        void Mark(bool start)
        {
            if (device.type == DeviceType.CUDA) torch.cuda.synchronize(device);
            if (start) clock.Restart();
            else clock.Stop();
        }

        public void Eval(EvalRecord eval) { }
        public void Message(string text) { }
        public void End(TrainingResult result) { }
    }
}
