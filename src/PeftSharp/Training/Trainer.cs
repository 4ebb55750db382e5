using System.Diagnostics;
using PeftSharp.Data;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Training;

/// <summary>
/// What the trainer needs from a model, and nothing more: the trainable parameters by name, the mean loss of a
/// micro-batch (as the model defines it: causal-LM cross-entropy over labels != -100, or classification
/// cross-entropy), and how to save the adapter in PEFT format into a folder. <see cref="SetTrainingMode"/>, when
/// given, switches dropout off for evaluation and back on.
/// </summary>
public sealed record TrainableModel(IReadOnlyList<(string Name, Parameter P)> Parameters, Func<Batch, Tensor> ComputeLoss, Action<string> SaveAdapter)
{
    public Action<bool>? SetTrainingMode { get; init; }
    /// <summary>
    /// Called after each optimizer step, before gradients are cleared, with the 1-based step number: where methods that
    /// reshape training as it goes act (AdaLoRA's rank allocation, LISA's and HFT's re-sampling of trained layers).
    /// </summary>
    public Action<int>? AfterOptimizerStep { get; init; }
    /// <summary>
    /// Called once a checkpoint is restored, with the steps it had done: where methods whose trainable set follows the
    /// step (LISA's and HFT's draws) take up the set of that step.
    /// </summary>
    public Action<int>? Resumed { get; init; }
    /// <summary>False when <see cref="AfterOptimizerStep"/> freezes and thaws parameters (LISA, HFT) or grows them (IncreLoRA): the fused optimizer needs a fixed set.</summary>
    public bool FixedParameterSet { get; init; } = true;
    /// <summary>A method's state beside the parameters (IncreLoRA's ranks and scores), written into every checkpoint.</summary>
    public Func<Dictionary<string, Tensor>>? SaveState { get; init; }
    /// <summary>Takes up <see cref="SaveState"/>'s tensors on resume, before the parameters are loaded; the string names the file.</summary>
    public Action<IReadOnlyDictionary<string, Tensor>, string>? LoadState { get; init; }
    /// <summary>Layers whose update is scaling * B @ A, by parameter name: what <c>--optim loraplus|lorafa|lorapro</c> work on.</summary>
    public IReadOnlyList<Tuners.LowRankFactors> LowRankFactors { get; init; } = [];
    /// <summary>Parameters exempt from weight decay where an optimizer follows transformers' rule (biases, LayerNorm weights).</summary>
    public IReadOnlySet<string> NoDecay { get; init; } = new HashSet<string>();
    /// <summary>
    /// Asked after each optimizer step: entries of parameters whose optimizer state must be zeroed because a method
    /// moved them to other weights (SpIEL's regrowth, LIFT's mask refresh).
    /// </summary>
    public Func<IEnumerable<(Parameter P, Tensor Entries)>>? StaleOptimizerEntries { get; init; }
    /// <summary>Called once a checkpoint folder is restored, with its step: for method state that is not a parameter (sparse supports).</summary>
    public Action<string, int>? RestoredFrom { get; init; }
    /// <summary>A method's own optimizer (SpIEL's), asked before the trainer picks one; null or a null result: the trainer's.</summary>
    public Func<TrainingOptions, IOptimizer?>? NewOptimizer { get; init; }
    /// <summary>Called after each micro-batch's backward, before the next one adds to the gradients (SpIEL samples each).</summary>
    public Action? AfterBackward { get; init; }
}

/// <summary>Optional plumbing for a run: where progress goes, cancellation, Ctrl+C handling, a per-step hook.</summary>
public sealed record TrainerHooks
{
    public IProgressSink Progress { get; init; } = ProgressSinks.None;
    /// <summary>Cancelling stops after the current step, saving a checkpoint as Ctrl+C does.</summary>
    public CancellationToken Cancel { get; init; }
    /// <summary>Catch Ctrl+C (Console.CancelKeyPress) to save and exit; a second Ctrl+C quits at once.</summary>
    public bool HandleCtrlC { get; init; } = true;
}

/// <summary>The training loop: one readable function from the first step to the saved adapter.</summary>
public static class Trainer
{
    public const string MetricsFile = "metrics.jsonl";
    public const string LossCurveFile = "loss_curve.png";
    public const string OptionsFile = "training_options.json";

    /// <summary>
    /// Trains <paramref name="model"/>'s parameters on <paramref name="train"/>. One optimizer step is
    /// <c>gradient_accumulation_steps</c> micro-batches of <c>per_device_train_batch_size</c> rows (fewer at the end of an
    /// epoch); each micro-batch loss is divided by the number of micro-batches in the step before backward, and the
    /// step's reported loss is the sum of those quotients, as transformers reports it. Then: clip gradients, AdamW with
    /// the scheduled rate, log, evaluate and checkpoint as asked. With <see cref="TrainingOptions.OutputDir"/> null,
    /// nothing is written to disk.
    /// </summary>
    public static TrainingResult Run(TrainableModel model, BatchSource train, BatchSource? eval, TrainingOptions options, TrainerHooks? hooks = null)
    {
        var o = options.Validate();
        hooks ??= new TrainerHooks();
        var progress = hooks.Progress;
        var parameters = model.Parameters;
        var outDir = o.OutputDir;
        if (train.Count == 0) throw new ArgumentException("no training rows");
        if (parameters.Count == 0) throw new ArgumentException("the model has no trainable parameters");

        // ---- the plan: how many steps, which learning rate at each
        int batchSize = o.PerDeviceTrainBatchSize, accumulation = o.GradientAccumulationSteps;
        var microPerEpoch = train.MicroBatchesPerEpoch(batchSize);
        var stepsPerEpoch = (microPerEpoch + accumulation - 1) / accumulation;
        var totalSteps = o.MaxSteps > 0 ? o.MaxSteps : (int)Math.Ceiling(o.NumTrainEpochs * stepsPerEpoch);
        var schedule = new LrSchedule(o.LrSchedulerType, o.LearningRate, LrSchedule.WarmupFor(o.WarmupSteps, o.WarmupRatio, totalSteps), totalSteps);
        using var optimizer = NewOptimizer(o, model);
        random.manual_seed(o.Seed);
        var state = new TrainerState
        {
            TotalSteps = totalSteps, Seed = o.Seed, Shuffle = o.Shuffle, BatchSize = batchSize,
            GradientAccumulationSteps = accumulation, TrainRows = train.Count, Schedule = schedule,
        };

        // ---- resume: parameters, optimizer, RNG and data position from the checkpoint, each checked before it is used.
        //      Nothing is written before this point, so a refused checkpoint or folder leaves the folder as it was.
        var resumeFrom = ResumePath(o);
        if (outDir is not null) RunFolder.Claim(outDir, resuming: resumeFrom is not null, o.OverwriteOutputDir);
        if (resumeFrom is { } checkpoint)
        {
            var saved = TrainerCheckpoint.ReadState(checkpoint);
            CheckSameRun(saved, state, checkpoint, microPerEpoch);
            TrainerCheckpoint.Restore(checkpoint, parameters, optimizer, model.LoadState);
            if (saved.Schedule.BaseLr != schedule.BaseLr)
                progress.Message($"resuming with learning rate {schedule.BaseLr:G4} instead of {saved.Schedule.BaseLr:G4}: the schedule keeps its " +
                    $"shape and its place (step {saved.GlobalStep} of {totalSteps}), and every rate from here on is scaled by {schedule.BaseLr / saved.Schedule.BaseLr:G4}");
            state = saved with { Schedule = schedule };
            model.RestoredFrom?.Invoke(checkpoint, state.GlobalStep);
            model.Resumed?.Invoke(state.GlobalStep);
        }
        string? lastCheckpoint = outDir is null ? null : TrainerCheckpoint.Latest(outDir);
        using var metrics = outDir is null ? null : new MetricsLog(Path.Combine(outDir, MetricsFile), state.GlobalStep);
        if (outDir is not null) IO.AtomicFile.WriteAllText(Path.Combine(outDir, OptionsFile), TrainingOptionsFile.ToJson(o));

        var interrupted = 0;
        ConsoleCancelEventHandler onCtrlC = (_, e) => e.Cancel = Interlocked.Exchange(ref interrupted, 1) == 0;
        if (hooks.HandleCtrlC) Console.CancelKeyPress += onCtrlC;

        var steps = new List<StepRecord>();
        var evals = new List<EvalRecord>();
        var reason = StopReason.Completed;
        var message = "";
        var zeroGradientSteps = 0; // consecutive steps whose gradient norm was exactly 0
        string? adapterDir = null;
        progress.Start(new TrainingPlan(totalSteps, state.GlobalStep, train.Count, eval?.Count ?? 0, batchSize * accumulation, outDir));
        try
        {
            if (eval is not null && state.GlobalStep == 0) Evaluate(0);
            model.SetTrainingMode?.Invoke(true);
            var order = train.EpochOrder(state.Epoch, o.Seed, o.Shuffle);

            while (state.GlobalStep < totalSteps)
            {
                if (state.MicroBatchInEpoch >= microPerEpoch)
                {
                    state = state with { Epoch = state.Epoch + 1, MicroBatchInEpoch = 0 };
                    order = train.EpochOrder(state.Epoch, o.Seed, o.Shuffle);
                }
                var micro = Math.Min(accumulation, microPerEpoch - state.MicroBatchInEpoch);
                var clock = Stopwatch.StartNew();

                // ---- forward and backward over the step's micro-batches, gradients accumulating; then clipping
                optimizer.ZeroGrad();
                var (loss, gradNorm, tokens) = ForwardBackwardClip(model, train, order, state.MicroBatchInEpoch, micro, batchSize, optimizer, o.MaxGradNorm);
                var step = state.GlobalStep + 1;

                // ---- check, update with the scheduled learning rate
                if (!double.IsFinite(loss) || !double.IsFinite(gradNorm))
                {
                    var (what, value) = double.IsFinite(loss) ? ("gradient norm", gradNorm) : ("loss", loss);
                    (reason, message) = (StopReason.NonFinite, NonFiniteMessage(what, value, step, LastGood(step)));
                    break;
                }
                var lr = schedule.At(state.GlobalStep);
                optimizer.Step(lr);
                model.AfterOptimizerStep?.Invoke(state.GlobalStep + 1);
                foreach (var (p, entries) in model.StaleOptimizerEntries?.Invoke() ?? [])
                    optimizer.ResetEntries(parameters.First(x => x.P.Handle == p.Handle).Name, entries);
                // Parameters the hook froze (LISA's, HFT's) give their optimizer state back.
                optimizer.DropState(parameters.Where(p => !p.P.requires_grad).Select(p => p.Name));
                optimizer.ZeroGrad();
                state = state with { GlobalStep = step, MicroBatchInEpoch = state.MicroBatchInEpoch + micro };

                // ---- report, evaluate, checkpoint
                var record = new StepRecord(step, state.Epoch + (double)state.MicroBatchInEpoch / microPerEpoch, loss, lr, gradNorm,
                    tokens / Math.Max(clock.Elapsed.TotalSeconds, 1e-9));
                steps.Add(record);
                metrics?.Step(record);
                progress.Step(record);
                zeroGradientSteps = gradNorm == 0 ? zeroGradientSteps + 1 : 0;
                if (zeroGradientSteps >= CollapsePatience || (step == totalSteps && zeroGradientSteps == steps.Count))
                {
                    (reason, message) = (StopReason.Collapsed, CollapsedMessage(zeroGradientSteps, step, loss, LastGood(step - zeroGradientSteps + 1)));
                    break;
                }
                if (eval is not null && o.EvalSteps > 0 && step % o.EvalSteps == 0 && step < totalSteps) Evaluate(step);
                var saved = false;
                if (outDir is not null && o.SaveSteps > 0 && step % o.SaveSteps == 0) { SaveCheckpoint(); saved = true; }
                if (Volatile.Read(ref interrupted) == 1 || hooks.Cancel.IsCancellationRequested)
                {
                    if (outDir is not null && !saved) SaveCheckpoint();
                    reason = StopReason.Interrupted;
                    message = $"interrupted after step {step} of {totalSteps}; " + (outDir is null ? "nothing saved (no output folder)."
                        : $"checkpoint saved to {lastCheckpoint}; continue with --resume.");
                    break;
                }
            }

            if (reason == StopReason.Completed)
            {
                if (eval is not null) Evaluate(totalSteps);
                if (outDir is not null)
                {
                    model.SaveAdapter(outDir);
                    adapterDir = outDir;
                }
                message = $"trained {totalSteps} steps" + (adapterDir is null ? "." : $"; saved to {adapterDir}");
            }
            else
            {
                var (eventStep, name) = reason switch
                {
                    StopReason.NonFinite => (state.GlobalStep + 1, "non_finite"),
                    StopReason.Collapsed => (state.GlobalStep, "collapsed"),
                    _ => (state.GlobalStep, "interrupted"),
                };
                metrics?.Event(eventStep, name, message);
            }
            // A failed run's message is the caller's to show as an error (the CLI prints it once, as "error: ...").
            if (reason is StopReason.Completed or StopReason.Interrupted) progress.Message(message);
        }
        finally
        {
            if (hooks.HandleCtrlC) Console.CancelKeyPress -= onCtrlC;
        }

        string? curve = null;
        if (metrics is not null && outDir is not null)
        {
            var (trainPoints, evalPoints) = MetricsLog.Read(metrics.Path);
            var path = Path.Combine(outDir, LossCurveFile);
            if (LossCurvePng.Write(path, trainPoints, evalPoints)) curve = path;
        }
        var result = new TrainingResult(reason, message, steps, evals, state.GlobalStep, totalSteps, lastCheckpoint, adapterDir, metrics?.Path, curve);
        progress.End(result);
        return result;

        void Evaluate(int afterStep)
        {
            var e = Evaluation(model, eval!, o.PerDeviceEvalBatchSize, afterStep);
            evals.Add(e);
            metrics?.Eval(e);
            progress.Eval(e);
        }

        // The newest checkpoint whose weights were not the ones that went wrong at step badStep (those of step badStep-1).
        string? LastGood(int badStep) => outDir is null ? null : TrainerCheckpoint.LastFinite(outDir, badStep - 1);

        void SaveCheckpoint()
        {
            lastCheckpoint = TrainerCheckpoint.Save(outDir!, state, parameters, optimizer, model.SaveAdapter, model.SaveState);
            TrainerCheckpoint.Prune(outDir!, o.SaveTotalLimit);
            progress.Message($"checkpoint saved: {lastCheckpoint}");
        }
    }

    /// <summary>
    /// Held-out loss: every row once, in order, without gradients and (when the model allows) without dropout.
    /// Batch means are weighted by their number of targets, so the result is the mean over all held-out tokens.
    /// </summary>
    public static EvalRecord Evaluation(TrainableModel model, BatchSource data, int batchSize, int afterStep)
    {
        model.SetTrainingMode?.Invoke(false);
        try
        {
            using var _ = no_grad();
            var order = data.EpochOrder(0, 0, shuffle: false);
            using var outer = NewDisposeScope();
            Tensor? sum = null; // on the device, read once at the end
            long count = 0;
            for (var i = 0; i < data.MicroBatchesPerEpoch(batchSize); i++)
            {
                using var scope = NewDisposeScope();
                var batch = data.MicroBatch(order, i, batchSize);
                if (batch.LossTokens == 0) continue;
                var weighted = model.ComputeLoss(batch).to(ScalarType.Float64) * batch.LossTokens;
                sum = (sum is null ? weighted : sum + weighted).MoveToOuterDisposeScope();
                count += batch.LossTokens;
            }
            var mean = count == 0 || sum is null ? double.NaN : sum.item<double>() / count;
            return new EvalRecord(afterStep, mean, Math.Exp(mean), count);
        }
        finally
        {
            model.SetTrainingMode?.Invoke(true);
        }
    }

    static IOptimizer NewOptimizer(TrainingOptions o, TrainableModel model)
    {
        if (model.NewOptimizer?.Invoke(o) is { } own) return own;
        if (o.Optim is "loraplus" or "lorafa" or "lorapro") return LowRankOptimizers.Create(o, model);
        bool fused = o.Optim == "adamw_torch_fused" || (o.Optim == "auto" && model.FixedParameterSet);
        if (fused && !model.FixedParameterSet)
            throw new ArgumentException("option optim adamw_torch_fused needs a fixed set of trainable parameters, and this method changes it as it trains; use adamw_torch");
        return fused
            ? new FusedAdamW(model.Parameters, o.AdamBeta1, o.AdamBeta2, o.AdamEpsilon, o.WeightDecay, o.Amsgrad)
            : new AdamW(model.Parameters, o.AdamBeta1, o.AdamBeta2, o.AdamEpsilon, o.WeightDecay, o.Amsgrad);
    }

    /// <summary>
    /// The micro-batches of one step, forward and backward, then gradient clipping. The loss stays on the device
    /// and is read together with the gradient norm in one transfer at the end, so the GPU never waits for the host
    /// between micro-batches.
    /// </summary>
    static (double Loss, double GradNorm, long Tokens) ForwardBackwardClip(TrainableModel model, BatchSource train, int[] order,
        int firstMicro, int micro, int batchSize, IOptimizer optimizer, double maxGradNorm)
    {
        using var stepScope = NewDisposeScope();
        Tensor? lossSum = null;
        long tokens = 0;
        for (var k = 0; k < micro; k++)
        {
            using var scope = NewDisposeScope();
            var batch = train.MicroBatch(order, firstMicro + k, batchSize);
            var microLoss = model.ComputeLoss(batch);
            (microLoss / micro).backward();
            model.AfterBackward?.Invoke();
            var part = microLoss.detach().to(ScalarType.Float64) / micro;
            lossSum = (lossSum is null ? part : lossSum + part).MoveToOuterDisposeScope();
            tokens += batch.Tokens;
        }
        var norm = GradClip.ClipGradientsTensor(optimizer.Gradients(), maxGradNorm);
        var both = stack([lossSum!.reshape(1), norm.to(ScalarType.Float64).reshape(1)]).cpu();
        return (both[0, 0].item<double>(), both[1, 0].item<double>(), tokens);
    }

    static string? ResumePath(TrainingOptions o)
    {
        var r = o.ResumeFromCheckpoint;
        if (string.IsNullOrEmpty(r) || r is "false" or "False") return null;
        if (r is not "latest") return Directory.Exists(r) ? r : throw new DirectoryNotFoundException($"checkpoint to resume from not found: {r}");
        if (o.OutputDir is null) throw new ArgumentException("resume_from_checkpoint=latest needs an output_dir to look in");
        return TrainerCheckpoint.Latest(o.OutputDir)
            ?? throw new DirectoryNotFoundException($"--resume: no checkpoint-<step> folder in {o.OutputDir} (checkpoints are written every --save-steps and on Ctrl+C)");
    }

    /// <summary>
    /// A resumed run must cut the same data the same way, or "the same loss curve" would be a lie. The base learning rate
    /// may change (to recover from a divergence); the schedule's type, warmup and length may not. The saved data position
    /// must be the one its step count implies.
    /// </summary>
    static void CheckSameRun(TrainerState saved, TrainerState now, string checkpoint, int microPerEpoch)
    {
        void Same<T>(T a, T b, string what)
        {
            if (!EqualityComparer<T>.Default.Equals(a, b))
                throw new InvalidOperationException($"cannot resume from {checkpoint}: it was trained with {what} = {a}, this run has {b}");
        }
        Same(saved.TrainRows, now.TrainRows, "training rows");
        Same(saved.BatchSize, now.BatchSize, "per_device_train_batch_size");
        Same(saved.GradientAccumulationSteps, now.GradientAccumulationSteps, "gradient_accumulation_steps");
        Same(saved.Seed, now.Seed, "seed");
        Same(saved.Shuffle, now.Shuffle, "shuffle");
        Same(saved.Schedule with { BaseLr = now.Schedule.BaseLr }, now.Schedule, "the learning-rate schedule");
        Same(saved.TotalSteps, now.TotalSteps, "total steps");
        var (epoch, micro) = PositionAfter(saved.GlobalStep, microPerEpoch, saved.GradientAccumulationSteps);
        var file = Path.Combine(checkpoint, TrainerCheckpoint.StateFile);
        if (saved.Epoch != epoch || saved.MicroBatchInEpoch != micro)
            throw new InvalidDataException($"{file}: fields 'epoch' = {saved.Epoch}, 'micro_batch_in_epoch' = {saved.MicroBatchInEpoch} " +
                $"do not match 'global_step' = {saved.GlobalStep} (which puts the run at epoch {epoch}, micro-batch {micro}); resume from another checkpoint");
    }

    /// <summary>Where the loop stands after <paramref name="steps"/> steps, as the loop itself advances.</summary>
    static (int Epoch, int MicroBatch) PositionAfter(int steps, int microPerEpoch, int accumulation)
    {
        int epoch = 0, micro = 0;
        for (var i = 0; i < steps; i++)
        {
            if (micro >= microPerEpoch) (epoch, micro) = (epoch + 1, 0);
            micro += Math.Min(accumulation, microPerEpoch - micro);
        }
        return (epoch, micro);
    }

    /// <summary>
    /// Steps in a row with a gradient norm of exactly 0 after which a run counts as collapsed. A live adapter never has
    /// an exactly-zero global gradient; a collapsed one (bfloat16 logits that saturated, a loss stuck at ln(vocab)) has
    /// nothing but. Five rather than one so that a single underflowing step does not stop a run.
    /// </summary>
    internal const int CollapsePatience = 5;

    static string CollapsedMessage(int zeroSteps, int step, double loss, string? lastGood) =>
        $"training collapsed: the gradient norm has been exactly 0 for {zeroSteps} step(s) up to step {step} (loss {loss:G6}, which stays put), " +
        "so nothing is learning and no adapter was saved. A loss stuck at ln(vocabulary size) means uniform predictions; " +
        "with --bf16 try float32 (drop --bf16), otherwise a lower --learning-rate. " +
        (lastGood is not null ? $"The last checkpoint from before the collapse is {lastGood}." : "No checkpoint from before the collapse was saved.");

    static string NonFiniteMessage(string what, double value, int step, string? lastGood) =>
        $"the {what} is {value} at step {step}; training stopped without applying that step. " +
        (lastGood is not null
            ? $"The last good checkpoint (finite weights, which gave a finite loss) is {lastGood}: resume from it with " +
              $"--resume-from-checkpoint {lastGood} and a lower --learning-rate (the schedule keeps its shape and place, its rates scale) " +
              "or a smaller --max-grad-norm."
            : "No checkpoint before the weights went wrong was saved (use --save-steps); try a lower --learning-rate, a smaller --max-grad-norm, or check the data.");
}
