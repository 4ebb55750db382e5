using static TorchSharp.torch;

namespace PeftSharp.IO;

/// <summary>
/// NaN or Inf in stored weights make every output NaN. transformers and PEFT load such weights without a word; we load
/// them too (a broken checkpoint can still be inspected) but say so on stderr, naming the tensors and their file.
/// </summary>
internal static class NonFiniteWeights
{
    public static Action<string> Warn { get; set; } = m => Console.Error.WriteLine("warning: " + m);

    /// <summary>
    /// True when a floating tensor holds NaN or Inf. Cheap: one summing pass, which any NaN or Inf makes non-finite;
    /// only then (or on a sum that overflows) is each element tested.
    /// </summary>
    public static bool Has(Tensor t)
    {
        if (!t.is_floating_point() || t.numel() == 0) return false;
        using var scope = NewDisposeScope();
        if (double.IsFinite(t.sum(ScalarType.Float64).item<double>())) return false;
        return !isfinite(t).all().item<bool>();
    }

    /// <summary>One warning per file for the tensors found by <see cref="Has"/>.</summary>
    public static void Report(IEnumerable<(string File, string Tensor)> found)
    {
        foreach (var g in found.GroupBy(f => f.File))
        {
            var names = g.Select(f => $"'{f.Tensor}'").ToList();
            Warn($"{g.Key}: {names.Count} tensor(s) hold NaN or Inf values ({string.Join(", ", names.Take(5))}" +
                $"{(names.Count > 5 ? ", ..." : "")}): outputs computed from them will be NaN. Is the checkpoint corrupt?");
        }
    }
}
