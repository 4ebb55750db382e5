using System.Text.Json;
using System.Text.RegularExpressions;
using PeftSharp.IO;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Training;

/// <summary>Where the loop is: everything besides tensors that a resumed run needs to continue the same curve.</summary>
public sealed record TrainerState
{
    /// <summary>Optimizer steps taken.</summary>
    public int GlobalStep { get; init; }
    /// <summary>Epoch in progress and the next micro-batch in it (the data position).</summary>
    public int Epoch { get; init; }
    public int MicroBatchInEpoch { get; init; }
    public int TotalSteps { get; init; }
    public long Seed { get; init; }
    public bool Shuffle { get; init; }
    public int BatchSize { get; init; }
    public int GradientAccumulationSteps { get; init; }
    /// <summary>Number of training rows, to notice a resume on different data.</summary>
    public int TrainRows { get; init; }
    public required LrSchedule Schedule { get; init; }
}

/// <summary>
/// <c>checkpoint-&lt;step&gt;/</c> folders: the adapter (PEFT format, via the caller's save callback),
/// <c>trainable.safetensors</c> (the trainable parameters under their own names, exact dtype, for resuming),
/// <c>optimizer.safetensors</c>, <c>rng_state.safetensors</c> (torch's CPU generator, for dropout) and
/// <c>trainer_state.json</c>. A checkpoint is written to a hidden temporary folder and renamed into place,
/// so a crash never leaves a half-written one that resume would pick.
/// </summary>
public static partial class TrainerCheckpoint
{
    public const string StateFile = "trainer_state.json";
    public const string TrainableFile = "trainable.safetensors";
    public const string OptimizerFile = "optimizer.safetensors";
    public const string RngFile = "rng_state.safetensors";
    /// <summary>A method's own state beside the parameters (IncreLoRA's ranks and scores), when it has one.</summary>
    public const string MethodStateFile = "method_state.safetensors";

    static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, WriteIndented = true };

    [GeneratedRegex(@"^checkpoint-(\d+)$")]
    private static partial Regex Name();

    public static string Save(string outputDir, TrainerState state, IReadOnlyList<(string Name, Parameter P)> parameters, IOptimizer optimizer,
        Action<string> saveAdapter, Func<Dictionary<string, Tensor>>? methodState = null)
    {
        Directory.CreateDirectory(outputDir);
        var final = Path.Combine(outputDir, $"checkpoint-{state.GlobalStep}");
        var tmp = Path.Combine(outputDir, $".checkpoint-{state.GlobalStep}.tmp{Environment.ProcessId}");
        if (Directory.Exists(tmp)) Directory.Delete(tmp, recursive: true);
        Directory.CreateDirectory(tmp);
        try
        {
            saveAdapter(tmp);
            SafetensorsWriter.Save(Path.Combine(tmp, TrainableFile), parameters.ToDictionary(p => p.Name, p => (Tensor)p.P));
            optimizer.Save(Path.Combine(tmp, OptimizerFile));
            if (methodState?.Invoke() is { Count: > 0 } extra)
                try { SafetensorsWriter.Save(Path.Combine(tmp, MethodStateFile), extra); }
                finally { foreach (var t in extra.Values) t.Dispose(); }
            using (var rng = random.get_rng_state())
                SafetensorsWriter.Save(Path.Combine(tmp, RngFile), new Dictionary<string, Tensor> { ["cpu"] = rng });
            AtomicFile.WriteAllText(Path.Combine(tmp, StateFile), JsonSerializer.Serialize(state, Json));
            if (Directory.Exists(final)) Directory.Delete(final, recursive: true); // the same step saved again after a resume
            Directory.Move(tmp, final);
            return final;
        }
        catch
        {
            try { Directory.Delete(tmp, recursive: true); } catch (IOException) { }
            throw;
        }
    }

    /// <summary>The complete checkpoint with the highest step in <paramref name="outputDir"/>, or null.</summary>
    public static string? Latest(string outputDir) => All(outputDir).LastOrDefault().Path;

    /// <summary>Complete checkpoints, oldest first.</summary>
    public static IReadOnlyList<(int Step, string Path)> All(string outputDir)
    {
        if (!Directory.Exists(outputDir)) return [];
        return Directory.GetDirectories(outputDir)
            .Select(d => (Match: Name().Match(Path.GetFileName(d)), Path: d))
            .Where(x => x.Match.Success && File.Exists(Path.Combine(x.Path, StateFile)))
            .Select(x => (int.Parse(x.Match.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture), x.Path))
            .OrderBy(x => x.Item1)
            .ToList();
    }

    /// <summary>Deletes the oldest checkpoints so that at most <paramref name="keep"/> remain.</summary>
    public static void Prune(string outputDir, int keep)
    {
        if (keep <= 0) return;
        var all = All(outputDir);
        foreach (var (_, path) in all.Take(Math.Max(0, all.Count - keep))) Directory.Delete(path, recursive: true);
    }

    /// <summary>
    /// Reads and checks <c>trainer_state.json</c>: valid JSON, every field in range. Whether the position fits this
    /// run's data is the trainer's check, which knows the plan.
    /// </summary>
    public static TrainerState ReadState(string checkpoint)
    {
        var path = Path.Combine(checkpoint, StateFile);
        if (!File.Exists(path)) throw new FileNotFoundException($"{checkpoint} is not a training checkpoint (no {StateFile})", path);
        TrainerState? state;
        try { state = JsonSerializer.Deserialize<TrainerState>(File.ReadAllText(path), Json); }
        catch (JsonException e)
        {
            var field = string.IsNullOrEmpty(e.Path) || e.Path == "$" ? "" : $" at '{e.Path.TrimStart('$', '.')}'";
            throw new InvalidDataException($"{path}: not a valid trainer state{field} ({Data.Jsonl.FirstSentence(e.Message)}); resume from another checkpoint");
        }
        if (state is null) throw new InvalidDataException($"{path} is empty");
        void Check(bool ok, string field, object value, string rule)
        {
            if (!ok) throw new InvalidDataException($"{path}: field '{field}' is {value}, but it {rule}; resume from another checkpoint");
        }
        Check(state.Schedule is not null, "schedule", "missing", "must describe the learning-rate schedule");
        Check(state.TotalSteps >= 1, "total_steps", state.TotalSteps, "must be at least 1");
        Check(state.GlobalStep >= 0 && state.GlobalStep <= state.TotalSteps, "global_step", state.GlobalStep, $"must be in [0, total_steps = {state.TotalSteps}]");
        Check(state.Epoch >= 0, "epoch", state.Epoch, "must not be negative");
        Check(state.MicroBatchInEpoch >= 0, "micro_batch_in_epoch", state.MicroBatchInEpoch, "must not be negative");
        Check(state.BatchSize >= 1, "batch_size", state.BatchSize, "must be at least 1");
        Check(state.GradientAccumulationSteps >= 1, "gradient_accumulation_steps", state.GradientAccumulationSteps, "must be at least 1");
        Check(state.TrainRows >= 1, "train_rows", state.TrainRows, "must be at least 1");
        Check(state.Schedule!.TotalSteps == state.TotalSteps, "schedule.total_steps", state.Schedule.TotalSteps, $"must equal total_steps = {state.TotalSteps}");
        Check(state.Schedule.WarmupSteps >= 0, "schedule.warmup_steps", state.Schedule.WarmupSteps, "must not be negative");
        Check(double.IsFinite(state.Schedule.BaseLr) && state.Schedule.BaseLr > 0, "schedule.base_lr", state.Schedule.BaseLr, "must be a positive number");
        Check(LrSchedule.Types.Contains(state.Schedule.Type), "schedule.type", $"'{state.Schedule.Type}'", $"must be one of {string.Join(", ", LrSchedule.Types)}");
        return state;
    }

    /// <summary>
    /// Loads parameters, optimizer state and the RNG from a checkpoint. Every file is checked against this run (names,
    /// shapes, dtypes, the RNG state's size) before anything is loaded, so a damaged checkpoint fails with its file
    /// named, never inside libtorch.
    /// </summary>
    public static void Restore(string checkpoint, IReadOnlyList<(string Name, Parameter P)> parameters, IOptimizer optimizer,
        Action<IReadOnlyDictionary<string, Tensor>, string>? loadMethodState = null)
    {
        var methodFile = Path.Combine(checkpoint, MethodStateFile);
        if (loadMethodState is not null && File.Exists(methodFile))
        {
            using var scope = NewDisposeScope();
            using var file = SafetensorsFile.Open(methodFile);
            loadMethodState(file.Names.ToDictionary(n => n, n => file.Load(n)), methodFile);
        }
        using var trainable = OpenChecked(checkpoint, TrainableFile);
        using var rng = OpenChecked(checkpoint, RngFile);
        using (OpenChecked(checkpoint, OptimizerFile)) { } // the optimizer checks its own tensors as it loads
        var missing = parameters.Select(p => p.Name).Where(n => !trainable.Contains(n)).ToList();
        if (missing.Count > 0)
            throw new InvalidDataException($"{trainable.Path}: no saved value for trainable parameter '{missing[0]}' " +
                $"({missing.Count} missing): was it written with another adapter configuration?");
        foreach (var (name, p) in parameters)
        {
            var info = trainable.Info(name);
            if (!info.Shape.SequenceEqual(p.shape) || info.DType != p.dtype)
                throw new InvalidDataException($"{trainable.Path}: '{name}' is {info.DType}[{string.Join(",", info.Shape)}] but the parameter is {p.dtype}[{string.Join(",", p.shape)}]");
        }
        using (var now = random.get_rng_state())
        {
            var saved = rng.Contains("cpu") ? rng.Info("cpu") : throw new InvalidDataException($"{rng.Path}: no tensor 'cpu' (the CPU generator's state)");
            if (saved.DType != now.dtype || !saved.Shape.SequenceEqual(now.shape))
                throw new InvalidDataException($"{rng.Path}: 'cpu' is {saved.DType}[{string.Join(",", saved.Shape)}] but the CPU generator's state is " +
                    $"{now.dtype}[{string.Join(",", now.shape)}]; the file is damaged, resume from another checkpoint");
        }

        using (no_grad())
            foreach (var (name, p) in parameters)
            {
                using var t = trainable.Load(name);
                p.copy_(t);
            }
        optimizer.Load(Path.Combine(checkpoint, OptimizerFile));
        using (var s = rng.Load("cpu"))
            random.set_rng_state(s);
    }

    static SafetensorsFile OpenChecked(string checkpoint, string name)
    {
        var path = Path.Combine(checkpoint, name);
        if (!File.Exists(path)) throw new FileNotFoundException($"{checkpoint} is incomplete: it has no {name}", path);
        return SafetensorsFile.Open(path);
    }

    /// <summary>
    /// The newest checkpoint before step <paramref name="beforeStep"/> whose saved parameters are all finite, or null.
    /// After a non-finite loss at step k the weights that gave it are those of step k-1, so the caller passes k-1.
    /// </summary>
    public static string? LastFinite(string outputDir, int beforeStep)
    {
        foreach (var (_, path) in All(outputDir).Where(c => c.Step < beforeStep).Reverse())
            if (AllFinite(Path.Combine(path, TrainableFile))) return path;
        return null;
    }

    static bool AllFinite(string file)
    {
        try
        {
            using var f = SafetensorsFile.Open(file);
            foreach (var name in f.Names)
            {
                using var scope = NewDisposeScope();
                var t = f.Load(name);
                if (t.is_floating_point() && !isfinite(t).all().item<bool>()) return false;
            }
            return true;
        }
        catch (Exception e) when (e is IOException or InvalidDataException or SafetensorsException) { return false; }
    }
}
