using System.Globalization;
using System.Text.Json;

namespace PeftSharp.Training;

/// <summary>
/// <c>metrics.jsonl</c>: one line per optimizer step (<c>step, epoch, loss, lr, grad_norm, tokens_per_s</c>), one per
/// evaluation (<c>step, eval_loss, eval_perplexity</c>) and one when a run stops early (<c>event</c>). Lines are flushed
/// as written so the file is useful while training runs. On resume, lines after the resumed step are dropped so the
/// file shows one continuous run.
/// </summary>
public sealed class MetricsLog : IDisposable
{
    readonly StreamWriter writer;
    public string Path { get; }

    public MetricsLog(string path, int resumeFromStep)
    {
        Path = path;
        var keep = resumeFromStep > 0 && File.Exists(path)
            ? File.ReadAllLines(path).Where(l => StepOf(l) is { } s && s <= resumeFromStep).ToList()
            : [];
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path))!);
        writer = new StreamWriter(path, append: false) { AutoFlush = true };
        foreach (var l in keep) writer.WriteLine(l);
    }

    public void Step(StepRecord r) => Write(new()
    {
        ["step"] = r.Step, ["epoch"] = Math.Round(r.Epoch, 4), ["loss"] = r.Loss, ["lr"] = r.LearningRate,
        ["grad_norm"] = r.GradNorm, ["tokens_per_s"] = Math.Round(r.TokensPerSecond, 1),
    });

    public void Eval(EvalRecord r) => Write(new() { ["step"] = r.Step, ["eval_loss"] = r.Loss, ["eval_perplexity"] = r.Perplexity });

    public void Event(int step, string name, string message) => Write(new() { ["step"] = step, ["event"] = name, ["message"] = message });

    void Write(Dictionary<string, object> fields)
    {
        // JSON has no NaN; a non-finite number is written as null.
        var clean = fields.ToDictionary(kv => kv.Key, kv => kv.Value is double d && !double.IsFinite(d) ? null : kv.Value);
        writer.WriteLine(JsonSerializer.Serialize(clean));
    }

    static int? StepOf(string line)
    {
        try
        {
            using var doc = JsonDocument.Parse(line);
            return doc.RootElement.TryGetProperty("step", out var s) && s.TryGetInt32(out var v) ? v : null;
        }
        catch (JsonException) { return null; }
    }

    /// <summary>Reads the step and eval lines back (for the loss curve).</summary>
    public static (List<(int Step, double Loss)> Train, List<(int Step, double Loss)> Eval) Read(string path)
    {
        var train = new List<(int, double)>();
        var eval = new List<(int, double)>();
        if (!File.Exists(path)) return (train, eval);
        foreach (var line in File.ReadLines(path))
        {
            try
            {
                using var doc = JsonDocument.Parse(line);
                var root = doc.RootElement;
                if (!root.TryGetProperty("step", out var s)) continue;
                if (root.TryGetProperty("loss", out var l) && l.ValueKind == JsonValueKind.Number) train.Add((s.GetInt32(), l.GetDouble()));
                if (root.TryGetProperty("eval_loss", out var e) && e.ValueKind == JsonValueKind.Number) eval.Add((s.GetInt32(), e.GetDouble()));
            }
            catch (JsonException) { }
        }
        return (train, eval);
    }

    public void Dispose() => writer.Dispose();

    internal static string Number(double d) => d.ToString("G6", CultureInfo.InvariantCulture);
}
