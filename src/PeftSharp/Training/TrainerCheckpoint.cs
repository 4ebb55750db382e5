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

    static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, WriteIndented = true };

    [GeneratedRegex(@"^checkpoint-(\d+)$")]
    private static partial Regex Name();

    public static string Save(string outputDir, TrainerState state, IReadOnlyList<(string Name, Parameter P)> parameters, IOptimizer optimizer,
        Action<string> saveAdapter)
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

    public static TrainerState ReadState(string checkpoint)
    {
        var path = Path.Combine(checkpoint, StateFile);
        if (!File.Exists(path)) throw new FileNotFoundException($"{checkpoint} is not a training checkpoint (no {StateFile})", path);
        return JsonSerializer.Deserialize<TrainerState>(File.ReadAllText(path), Json)
            ?? throw new InvalidDataException($"{path} is empty");
    }

    /// <summary>Loads parameters, optimizer state and the RNG from a checkpoint, and returns its loop state.</summary>
    public static TrainerState Restore(string checkpoint, IReadOnlyList<(string Name, Parameter P)> parameters, IOptimizer optimizer)
    {
        var state = ReadState(checkpoint);
        using (var file = SafetensorsFile.Open(Path.Combine(checkpoint, TrainableFile)))
        using (no_grad())
        {
            var missing = parameters.Select(p => p.Name).Where(n => !file.Contains(n)).ToList();
            if (missing.Count > 0)
                throw new InvalidDataException($"{checkpoint}: no saved value for trainable parameter '{missing[0]}' " +
                    $"({missing.Count} missing): was it written with another adapter configuration?");
            foreach (var (name, p) in parameters)
            {
                using var t = file.Load(name);
                if (!t.shape.SequenceEqual(p.shape))
                    throw new InvalidDataException($"{checkpoint}: '{name}' has shape [{string.Join(",", t.shape)}] but the parameter is [{string.Join(",", p.shape)}]");
                p.copy_(t);
            }
        }
        optimizer.Load(Path.Combine(checkpoint, OptimizerFile));
        using (var rng = SafetensorsFile.Open(Path.Combine(checkpoint, RngFile)))
        using (var s = rng.Load("cpu"))
            random.set_rng_state(s);
        return state;
    }
}
