using PeftSharp.IO;
using PeftSharp.Training;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.SparseFt.Spiel;

/// <summary>
/// The optimizer of SpIEL's authors (SftAdamW in AlanAnsell/peft, <c>tuners/sft/optimizer.py</c>): AdamW whose bias
/// correction counts steps per entry (an <c>age</c> tensor beside the moments), so that an entry grown with moments
/// seeded from its accumulated gradients is corrected by the steps those gradients span. Per entry:
/// <code>
/// m = β1 m + (1 − β1) g;  v = β2 v + (1 − β2) g²
/// p −= lr · m / ((√v + eps) · (1 − β1^age) / √(1 − β2^age))      (eps before the correction, transformers' AdamW)
/// p += −lr · weight_decay · p                                     (decay after the update)
/// age += 1                                                       (a fresh entry's age is 1)
/// </code>
/// Every trainable parameter is in one group with the run's weight decay, as their trainer builds it.
/// </summary>
internal sealed class SftAdamW(IReadOnlyList<(string Name, Parameter P)> parameters, double beta1, double beta2, double eps, double weightDecay)
    : IOptimizer
{
    public const string Name = "sft_adamw";

    sealed record State(Tensor ExpAvg, Tensor ExpAvgSq, Tensor Age);

    readonly Dictionary<string, State> state = new();

    public double Beta1 => beta1;
    public double Beta2 => beta2;

    public void Step(double lr)
    {
        using var _ = no_grad();
        foreach (var (name, p) in parameters)
        {
            using var scope = NewDisposeScope();
            var grad = p.grad;
            if (grad is null) continue;
            if (!state.TryGetValue(name, out var s))
                state[name] = s = new State(zeros_like(p).DetachFromDisposeScope(), zeros_like(p).DetachFromDisposeScope(), ones_like(p).DetachFromDisposeScope());
            s.ExpAvg.mul_(beta1).add_(grad, 1 - beta1);
            s.ExpAvgSq.mul_(beta2).addcmul_(grad, grad, 1 - beta2);
            var denom = s.ExpAvgSq.sqrt().add_(eps);
            denom.mul_(Correction(beta1, s.Age));
            denom.div_(Correction(beta2, s.Age).sqrt_());
            p.addcdiv_(s.ExpAvg, denom, -lr);
            if (weightDecay > 0) p.add_(p, -lr * weightDecay);
            s.Age.add_(1);
        }
    }

    /// <summary>1 − β^age, per entry, in the age's dtype (their <c>1.0 - beta ** age</c>).</summary>
    internal static Tensor Correction(double beta, Tensor age) => full_like(age, beta).pow_(age).neg_().add_(1);

    /// <summary>
    /// Sets the moments and ages of <paramref name="slots"/> of <paramref name="p"/> (their <c>update_optimizer</c> with
    /// <c>init_momenta</c>); a parameter without state yet gets fresh state first.
    /// </summary>
    public void Seed(Parameter p, Tensor slots, Tensor expAvg, Tensor expAvgSq, Tensor age)
    {
        var name = parameters.First(x => x.P.Handle == p.Handle).Name;
        using var _ = no_grad();
        if (!state.TryGetValue(name, out var s))
            state[name] = s = new State(zeros_like(p).DetachFromDisposeScope(), zeros_like(p).DetachFromDisposeScope(), ones_like(p).DetachFromDisposeScope());
        s.ExpAvg.index_put_(expAvg.to(s.ExpAvg.dtype), slots);
        s.ExpAvgSq.index_put_(expAvgSq.to(s.ExpAvgSq.dtype), slots);
        s.Age.index_put_(age.to(s.Age.dtype), slots);
    }

    public void ZeroGrad()
    {
        foreach (var (_, p) in parameters)
        {
            var g = p.grad;
            if (g is null) continue;
            g.Dispose();
            p.grad = null;
        }
    }

    public IReadOnlyList<Tensor> Gradients() => parameters.Select(p => p.P.grad).Where(g => g is not null).Cast<Tensor>().ToList();

    public void DropState(IEnumerable<string> names)
    {
        foreach (var name in names)
            if (state.Remove(name, out var s)) Dispose(s);
    }

    public IReadOnlyDictionary<string, Tensor> StateOf(string name) =>
        state.TryGetValue(name, out var s) ? new Dictionary<string, Tensor> { ["exp_avg"] = s.ExpAvg, ["exp_avg_sq"] = s.ExpAvgSq, ["age"] = s.Age } : new();

    /// <summary>Entries that start afresh: zero moments and age 1, as a new parameter's.</summary>
    public void ResetEntries(string name, Tensor entries)
    {
        if (!state.TryGetValue(name, out var s)) return;
        using var _ = no_grad();
        s.ExpAvg.view(-1).index_fill_(0, entries, 0).Dispose();
        s.ExpAvgSq.view(-1).index_fill_(0, entries, 0).Dispose();
        s.Age.view(-1).index_fill_(0, entries, 1).Dispose();
    }

    Dictionary<string, string> Metadata() => new()
    {
        ["optimizer"] = Name,
        ["betas"] = FormattableString.Invariant($"{beta1:R},{beta2:R}"),
        ["eps"] = FormattableString.Invariant($"{eps:R}"),
        ["weight_decay"] = FormattableString.Invariant($"{weightDecay:R}"),
    };

    public void Save(string path)
    {
        var d = new Dictionary<string, Tensor>();
        foreach (var (name, s) in state)
            (d[name + ".exp_avg"], d[name + ".exp_avg_sq"], d[name + ".age"]) = (s.ExpAvg, s.ExpAvgSq, s.Age);
        SafetensorsWriter.Save(path, d, Metadata());
    }

    public void Load(string path)
    {
        using var file = SafetensorsFile.Open(path);
        if (file.Metadata.TryGetValue("optimizer", out var saved) && saved != Name)
            throw new InvalidDataException($"{path}: optimizer state saved by '{saved}', but SpIEL with --optim auto trains with its authors' " +
                $"SftAdamW ('{Name}'); resume with --optim adamw_torch, or start afresh");
        var byName = parameters.ToDictionary(p => p.Name, p => p.P);
        foreach (var s in state.Values) Dispose(s);
        state.Clear();
        foreach (var name in file.Names.Where(n => n.EndsWith(".age")).Select(n => n[..^".age".Length]))
        {
            if (!byName.TryGetValue(name, out var p))
                throw new InvalidDataException($"{path}: optimizer state for '{name}', which is not a trainable parameter of this model (another adapter configuration?)");
            state[name] = new State(Like(file, name + ".exp_avg", p), Like(file, name + ".exp_avg_sq", p), Like(file, name + ".age", p));
        }
    }

    static Tensor Like(SafetensorsFile file, string key, Parameter p)
    {
        if (!file.Contains(key)) throw new InvalidDataException($"{file.Path}: missing '{key}'");
        var t = file.Load(key);
        if (t.shape.SequenceEqual(p.shape) && t.dtype == p.dtype) return t.to(p.device);
        var msg = $"{file.Path}: '{key}' is {t.dtype}{AdapterTensors.Shape(t)} but the parameter is {p.dtype}{AdapterTensors.Shape(p)}";
        t.Dispose();
        throw new InvalidDataException(msg);
    }

    static void Dispose(State s)
    {
        s.ExpAvg.Dispose();
        s.ExpAvgSq.Dispose();
        s.Age.Dispose();
    }

    public void Dispose()
    {
        foreach (var s in state.Values) Dispose(s);
        state.Clear();
    }
}
