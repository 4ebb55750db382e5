using PeftSharp.IO;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Training;

/// <summary>
/// <c>torch.optim.AdamW</c> (single-tensor path, as PyTorch runs on CPU), step for step and op for op:
/// <code>
/// step += 1
/// p *= 1 - lr * weight_decay                       (decoupled weight decay, Loshchilov &amp; Hutter)
/// m.lerp_(g, 1 - beta1);  v = v * beta2 + (1 - beta2) * g * g
/// denom = sqrt(v [or max(v) with amsgrad]) / sqrt(1 - beta2^step) + eps
/// p -= lr / (1 - beta1^step) * m / denom
/// </code>
/// State is kept per parameter in the parameter's dtype (float32 for adapters) and saved to safetensors, so a
/// resumed run continues bit for bit. State is created at a parameter's first gradient; parameters without a gradient are
/// skipped, as PyTorch does, and <see cref="DropState"/> frees the state of parameters that stop training.
/// </summary>
public sealed class AdamW : IOptimizer
{
    sealed class State(Tensor expAvg, Tensor expAvgSq, Tensor? maxExpAvgSq)
    {
        public long Step;
        public Tensor ExpAvg = expAvg, ExpAvgSq = expAvgSq;
        public Tensor? MaxExpAvgSq = maxExpAvgSq;
    }

    readonly IReadOnlyList<(string Name, Parameter P)> parameters;
    readonly Dictionary<string, State> state = new();
    readonly Func<string, ParamSettings> settings;

    public double Beta1 { get; }
    public double Beta2 { get; }
    public double Eps { get; }
    public double WeightDecay { get; }
    public bool Amsgrad { get; }

    /// <summary>Recorded in the state file as <c>optimizer</c>; a resume under another name is refused.</summary>
    public string Name { get; }

    /// <summary>PyTorch's defaults: betas (0.9, 0.999), eps 1e-8, weight_decay 0.01.</summary>
    /// <param name="settings">
    /// per-parameter learning-rate factor and weight decay (torch's param groups); unset: factor 1 and
    /// <paramref name="weightDecay"/> for every parameter.
    /// </param>
    /// <param name="name">the optimizer's name in the state file (a wrapper's, such as "loraplus").</param>
    public AdamW(IReadOnlyList<(string Name, Parameter P)> parameters, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8,
        double weightDecay = 0.01, bool amsgrad = false, Func<string, ParamSettings>? settings = null, string name = "adamw")
    {
        var duplicate = parameters.GroupBy(p => p.Name).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null) throw new ArgumentException($"parameter name '{duplicate.Key}' appears twice");
        this.parameters = parameters;
        (Beta1, Beta2, Eps, WeightDecay, Amsgrad, Name) = (beta1, beta2, eps, weightDecay, amsgrad, name);
        var uniform = new ParamSettings(1, weightDecay);
        this.settings = settings ?? (_ => uniform);
    }

    /// <summary>The learning-rate factor and weight decay of parameter <paramref name="name"/>.</summary>
    public ParamSettings SettingsOf(string name) => settings(name);

    /// <summary>Optimizer steps taken by the first parameter that has state (0 before the first step).</summary>
    public long StepCount => state.Values.Select(s => s.Step).DefaultIfEmpty(0).Max();

    /// <summary>Parameters that have optimizer state (those that have had a gradient since their state was last dropped).</summary>
    public int StateCount => state.Count;

    /// <summary>Bytes of optimizer state held (moment tensors; the step counters are not counted).</summary>
    public long StateBytes => state.Values.Sum(s => Bytes(s.ExpAvg) + Bytes(s.ExpAvgSq) + (s.MaxExpAvgSq is { } m ? Bytes(m) : 0));

    static long Bytes(Tensor t) => t.numel() * t.ElementSize;

    /// <summary>
    /// Frees the state of <paramref name="names"/> (parameters that stopped training, as LISA's frozen layers): should
    /// they train again, they start from fresh moments, as a new optimizer would give them.
    /// </summary>
    public void DropState(IEnumerable<string> names)
    {
        foreach (var name in names)
            if (state.Remove(name, out var s)) DisposeState(s);
    }

    public IReadOnlyDictionary<string, Tensor> StateOf(string name)
    {
        var d = new Dictionary<string, Tensor>();
        if (!state.TryGetValue(name, out var s)) return d;
        (d["exp_avg"], d["exp_avg_sq"]) = (s.ExpAvg, s.ExpAvgSq);
        if (s.MaxExpAvgSq is { } max) d["max_exp_avg_sq"] = max;
        return d;
    }

    /// <summary>Zeroes the moments of <paramref name="entries"/> of the flat parameter <paramref name="name"/> (its step count stays).</summary>
    public void ResetEntries(string name, Tensor entries)
    {
        if (!state.TryGetValue(name, out var s)) return;
        using var _ = no_grad();
        foreach (var t in new[] { s.ExpAvg, s.ExpAvgSq, s.MaxExpAvgSq }.OfType<Tensor>())
            t.view(-1).index_fill_(0, entries, 0).Dispose();
    }

    /// <summary>The parameters' gradients (new handles, which the caller's dispose scope owns).</summary>
    public IReadOnlyList<Tensor> Gradients() => parameters.Select(p => p.P.grad).Where(g => g is not null).Cast<Tensor>().ToList();

    /// <summary>Sets every gradient to none, as <c>zero_grad(set_to_none=True)</c>.</summary>
    public void ZeroGrad()
    {
        foreach (var (_, p) in parameters)
        {
            // Each read of .grad makes a new handle; dispose it, then clear the gradient itself.
            var g = p.grad;
            if (g is null) continue;
            g.Dispose();
            p.grad = null;
        }
    }

    // lerp_ takes its weight as a tensor; one per dtype and device, made once (not a host-to-device copy per step).
    readonly Dictionary<(ScalarType, TorchSharp.DeviceType, int), Tensor> lerpWeights = new();

    internal Tensor LerpWeight(Tensor p)
    {
        var key = (p.dtype, p.device_type, p.device_index);
        if (!lerpWeights.TryGetValue(key, out var w))
            lerpWeights[key] = w = tensor(1 - Beta1, p.dtype, p.device).DetachFromDisposeScope();
        return w;
    }

    /// <summary>One update with learning rate <paramref name="lr"/> (the schedule's value for this step).</summary>
    public void Step(double lr)
    {
        using var _ = no_grad();
        foreach (var (name, p) in parameters)
        {
            using var scope = NewDisposeScope();
            var grad = p.grad;
            if (grad is null) continue;
            if (!state.TryGetValue(name, out var s))
            {
                s = new State(zeros_like(p).DetachFromDisposeScope(), zeros_like(p).DetachFromDisposeScope(),
                    Amsgrad ? zeros_like(p).DetachFromDisposeScope() : null);
                state[name] = s;
            }
            else if (!s.ExpAvg.shape.SequenceEqual(p.shape)) Grow(name, s, p);
            s.Step++;
            var ps = settings(name);
            Update(p, grad, s.ExpAvg, s.ExpAvgSq, s.MaxExpAvgSq, s.Step, lr * ps.LrScale, ps.WeightDecay, LerpWeight(p));
        }
    }

    /// <summary>
    /// A parameter that grew in place (IncreLoRA's new ranks) keeps its moments in the leading block of every dimension;
    /// the new entries start at zero, as a new parameter's would (they share the parameter's step count).
    /// </summary>
    static void Grow(string name, State s, Tensor p)
    {
        s.ExpAvg = Grown(name, s.ExpAvg, p);
        s.ExpAvgSq = Grown(name, s.ExpAvgSq, p);
        if (s.MaxExpAvgSq is { } max) s.MaxExpAvgSq = Grown(name, max, p);
    }

    static Tensor Grown(string name, Tensor old, Tensor p)
    {
        if (old.dim() != p.dim() || old.shape.Zip(p.shape).Any(d => d.First > d.Second))
            throw new InvalidOperationException($"parameter '{name}' changed from [{string.Join(",", old.shape)}] to [{string.Join(",", p.shape)}]; " +
                "the optimizer can follow a parameter that grows, not one that shrinks or changes its number of dimensions");
        var grown = zeros_like(p).DetachFromDisposeScope();
        var block = grown;
        for (int d = 0; d < old.dim(); d++) block = block.narrow(d, 0, old.shape[d]);
        block.copy_(old);
        old.Dispose();
        return grown;
    }

    /// <summary>
    /// One AdamW update of <paramref name="p"/> in place, its moments updated alongside: the arithmetic of both this
    /// optimizer (per parameter) and <see cref="FusedAdamW"/> (per flat buffer). <paramref name="lerpWeight"/> holds 1 - beta1.
    /// </summary>
    internal void Update(Tensor p, Tensor grad, Tensor expAvg, Tensor expAvgSq, Tensor? maxExpAvgSq, long step, double lr, double weightDecay, Tensor lerpWeight)
    {
        if (weightDecay != 0) p.mul_(1 - lr * weightDecay);
        expAvg.lerp_(grad, lerpWeight);
        expAvgSq.mul_(Beta2).addcmul_(grad, grad, 1 - Beta2);

        var biasCorrection1 = 1 - Math.Pow(Beta1, step);
        var biasCorrection2 = 1 - Math.Pow(Beta2, step);
        var stepSize = lr / biasCorrection1;
        var biasCorrection2Sqrt = Math.Pow(biasCorrection2, 0.5);
        Tensor denom;
        if (maxExpAvgSq is { } max)
        {
            max.copy_(maximum(max, expAvgSq));
            denom = (max.sqrt() / biasCorrection2Sqrt).add_(Eps);
        }
        else denom = (expAvgSq.sqrt() / biasCorrection2Sqrt).add_(Eps);
        p.addcdiv_(expAvg, denom, -stepSize);
    }

    /// <summary>
    /// The state as tensors named <c>&lt;param&gt;.exp_avg</c>, <c>.exp_avg_sq</c>, <c>.max_exp_avg_sq</c> and <c>.step</c>
    /// (int64 scalar). The tensors are the live state: save them before the next step.
    /// </summary>
    public Dictionary<string, Tensor> StateDict()
    {
        var d = new Dictionary<string, Tensor>();
        foreach (var (name, s) in state)
        {
            d[name + ".exp_avg"] = s.ExpAvg;
            d[name + ".exp_avg_sq"] = s.ExpAvgSq;
            if (s.MaxExpAvgSq is not null) d[name + ".max_exp_avg_sq"] = s.MaxExpAvgSq;
            d[name + ".step"] = tensor(s.Step);
        }
        return d;
    }

    /// <summary>Hyper-parameters recorded beside the state so a mismatched resume is noticed.</summary>
    public Dictionary<string, string> Metadata() => new()
    {
        ["optimizer"] = Name,
        ["betas"] = FormattableString.Invariant($"{Beta1:R},{Beta2:R}"),
        ["eps"] = FormattableString.Invariant($"{Eps:R}"),
        ["weight_decay"] = FormattableString.Invariant($"{WeightDecay:R}"),
        ["amsgrad"] = Amsgrad ? "true" : "false",
    };

    /// <summary>
    /// State saved with amsgrad on has a third moment the other setting would ignore (or miss), and state saved by another
    /// optimizer (lorapro's moments are of the full weight) means something else: refuse either mismatch.
    /// </summary>
    internal void CheckSameAmsgrad(SafetensorsFile file) => CheckSameKind(file, Name, Amsgrad);

    internal static void CheckSameKind(SafetensorsFile file, string name, bool amsgrad)
    {
        if (file.Metadata.TryGetValue("optimizer", out var saved) && saved != name)
            throw new InvalidDataException($"{file.Path}: optimizer state saved by '{saved}' but this run uses '{name}'; " +
                $"resume with --optim {(saved == "adamw" ? "auto" : saved)}");
        if (file.Metadata.TryGetValue("amsgrad", out var a) && (a == "true") != amsgrad)
            throw new InvalidDataException($"{file.Path}: saved with amsgrad={a} but this run has amsgrad={(amsgrad ? "true" : "false")}");
    }

    public void Save(string path)
    {
        var d = StateDict();
        try { SafetensorsWriter.Save(path, d, Metadata()); }
        finally
        {
            foreach (var (k, t) in d) if (k.EndsWith(".step")) t.Dispose();
        }
    }

    /// <summary>Restores state saved by <see cref="Save"/>; every tensor must match a parameter by name and shape.</summary>
    public void Load(string path)
    {
        using var file = SafetensorsFile.Open(path);
        CheckSameAmsgrad(file);
        LoadFrom(file, _ => false);
    }

    /// <summary>Restores the state in <paramref name="file"/>, passing over the tensors a wrapper keeps there (<paramref name="others"/>).</summary>
    internal void LoadFrom(SafetensorsFile file, Func<string, bool> others)
    {
        var path = file.Path;
        var byName = parameters.ToDictionary(p => p.Name, p => p.P);
        var names = file.Names.Where(n => n.EndsWith(".step") && !others(n)).Select(n => n[..^".step".Length]).ToList();
        foreach (var old in state.Values) DisposeState(old);
        state.Clear();
        foreach (var name in names)
        {
            if (!byName.TryGetValue(name, out var p))
                throw new InvalidDataException($"{path}: optimizer state for '{name}', which is not a trainable parameter of this model (another adapter configuration?)");
            var s = new State(LoadLike(file, name + ".exp_avg", p), LoadLike(file, name + ".exp_avg_sq", p),
                Amsgrad ? LoadLike(file, name + ".max_exp_avg_sq", p) : null);
            s.Step = ReadStep(file, name + ".step");
            state[name] = s;
        }
    }

    /// <summary>A parameter's step count: one non-negative int64, checked before libtorch reads it.</summary>
    internal static long ReadStep(SafetensorsFile file, string key)
    {
        var info = file.Info(key);
        if (info.DType != ScalarType.Int64 || info.Shape.Aggregate(1L, (a, b) => a * b) != 1)
            throw new InvalidDataException($"{file.Path}: '{key}' is {info.DType}[{string.Join(",", info.Shape)}] but a step count is one int64");
        using var t = file.Load(key);
        var step = t.item<long>();
        return step >= 0 ? step : throw new InvalidDataException($"{file.Path}: '{key}' is {step}, but a step count is not negative");
    }

    static Tensor LoadLike(SafetensorsFile file, string key, Parameter p)
    {
        if (!file.Contains(key)) throw new InvalidDataException($"{file.Path}: missing '{key}'");
        var t = file.Load(key);
        // State saved before its parameter grew (IncreLoRA grows after the step it checkpoints) fits inside it; Step grows it.
        bool fits = t.dim() == p.dim() && t.shape.Zip(p.shape).All(d => d.First <= d.Second);
        if (!fits || t.dtype != p.dtype)
        {
            var msg = $"{file.Path}: '{key}' is {t.dtype}[{string.Join(",", t.shape)}] but the parameter is {p.dtype}[{string.Join(",", p.shape)}]";
            t.Dispose();
            throw new InvalidDataException(msg);
        }
        return t.to(p.device);
    }

    static void DisposeState(State s)
    {
        s.ExpAvg.Dispose();
        s.ExpAvgSq.Dispose();
        s.MaxExpAvgSq?.Dispose();
    }

    public void Dispose()
    {
        foreach (var s in state.Values) DisposeState(s);
        state.Clear();
        foreach (var w in lerpWeights.Values) w.Dispose();
        lerpWeights.Clear();
    }
}
