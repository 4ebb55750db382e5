using static TorchSharp.torch;

namespace PeftSharp.Tuners.AdaLora;

/// <summary>
/// Smoothed sensitivity, AdaLoRA's importance measure (Zhang et al., 2023, eq. 8-10): for each key a sensitivity I
/// (|p ⊙ ∂L/∂p| per entry for AdaLoRA, one number per module for IncreLoRA) is averaged as Ī ← β1 Ī + (1-β1) I, its
/// uncertainty as Ū ← β2 Ū + (1-β2) |I - Ī|, and the score is Ī ⊙ Ū. The tensors live outside any dispose scope.
/// </summary>
public sealed class SensitivityEma<TKey>(double beta1, double beta2) : IDisposable where TKey : notnull
{
    readonly Dictionary<TKey, (Tensor Avg, Tensor Unc)> scores = new();

    public IReadOnlyCollection<TKey> Keys => scores.Keys;

    /// <summary>Folds this step's <paramref name="sensitivity"/> into <paramref name="key"/>'s averages (zero before the first).</summary>
    public void Update(TKey key, Tensor sensitivity)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        if (!scores.TryGetValue(key, out var s))
            s = (zeros_like(sensitivity).DetachFromDisposeScope(), zeros_like(sensitivity).DetachFromDisposeScope());
        var avg = (s.Avg * beta1 + sensitivity * (1 - beta1)).DetachFromDisposeScope();
        var unc = (s.Unc * beta2 + (sensitivity - avg).abs() * (1 - beta2)).DetachFromDisposeScope();
        s.Avg.Dispose();
        s.Unc.Dispose();
        scores[key] = (avg, unc);
    }

    public bool Contains(TKey key) => scores.ContainsKey(key);

    /// <summary>Ī ⊙ Ū for <paramref name="key"/> (a new tensor, owned by the caller's scope).</summary>
    public Tensor Score(TKey key) => scores.TryGetValue(key, out var s) ? s.Avg * s.Unc
        : throw new InvalidOperationException($"no sensitivity scores for '{key}' yet: scores are updated from gradients on earlier steps");

    /// <summary>The live averages of <paramref name="key"/>, for checkpoints.</summary>
    public (Tensor Avg, Tensor Unc) Averages(TKey key) => scores[key];

    /// <summary>Sets <paramref name="key"/>'s averages (copies), as read back from a checkpoint.</summary>
    public void Restore(TKey key, Tensor avg, Tensor unc)
    {
        if (scores.Remove(key, out var old)) { old.Avg.Dispose(); old.Unc.Dispose(); }
        scores[key] = (avg.detach().clone().DetachFromDisposeScope(), unc.detach().clone().DetachFromDisposeScope());
    }

    public void Clear()
    {
        foreach (var (avg, unc) in scores.Values) { avg.Dispose(); unc.Dispose(); }
        scores.Clear();
    }

    public void Dispose() => Clear();
}
