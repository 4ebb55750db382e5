using PeftSharp.IO;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Training;

/// <summary>
/// <see cref="AdamW"/>'s arithmetic, element for element, over flat buffers: the parameters of each dtype and device
/// are packed into one contiguous tensor and each parameter becomes a view of it, and so does its gradient, so an
/// update (and gradient clipping) costs a handful of kernels per buffer instead of per parameter. LoRA on all linear
/// layers of a 30-layer model has 420 parameters; at ~9 small kernels each that is several thousand launches a step,
/// which is what PyTorch's fused and foreach AdamW avoid on a GPU. Every parameter must receive a gradient every step
/// (adapters do); methods whose trainable set changes (LISA, HFT) use <see cref="AdamW"/>.
/// </summary>
public sealed class FusedAdamW : IOptimizer
{
    sealed record Member(string Name, Parameter P, long Offset, long[] Shape)
    {
        public long Numel => Shape.Aggregate(1L, (a, b) => a * b);
    }

    sealed class Group(Tensor parameters, Tensor gradients, List<Member> members, ParamSettings settings)
    {
        public readonly Tensor Params = parameters, Grads = gradients;
        public readonly List<Member> Members = members;
        public readonly ParamSettings Settings = settings;
        public Tensor? ExpAvg, ExpAvgSq, MaxExpAvgSq;
        public long Step;

        public Tensor View(Tensor flat, Member m) => flat.narrow(0, m.Offset, m.Numel).view(m.Shape);
    }

    readonly List<Group> groups = new();
    // The per-parameter optimizer holds the hyper-parameters, the update arithmetic and the file conventions; this one
    // only applies them to flat buffers.
    readonly AdamW rule;

    public double Beta1 => rule.Beta1;
    public double Beta2 => rule.Beta2;
    public double Eps => rule.Eps;
    public double WeightDecay => rule.WeightDecay;
    public bool Amsgrad => rule.Amsgrad;

    /// <summary>
    /// Packs <paramref name="parameters"/> (their values are kept) and points their gradients at the flat buffer; one buffer
    /// per dtype, device and <paramref name="settings"/> (see <see cref="AdamW"/>'s constructor).
    /// </summary>
    public FusedAdamW(IReadOnlyList<(string Name, Parameter P)> parameters, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8,
        double weightDecay = 0.01, bool amsgrad = false, Func<string, ParamSettings>? settings = null, string name = "adamw")
    {
        rule = new AdamW(parameters, beta1, beta2, eps, weightDecay, amsgrad, settings, name);
        using var _ = no_grad();
        foreach (var same in parameters.GroupBy(p => (p.P.dtype, p.P.device_type, p.P.device_index, rule.SettingsOf(p.Name))))
        {
            // Offsets start at 1: a gradient that autograd allocated afresh (storage offset 0) is then told apart
            // from one accumulated into the buffer, and copied back (see Gather).
            var members = new List<Member>();
            long offset = 1;
            foreach (var (member, p) in same)
            {
                members.Add(new Member(member, p, offset, p.shape));
                offset += p.numel();
            }
            var first = same.First().P;
            var flat = zeros(offset, dtype: first.dtype, device: first.device).DetachFromDisposeScope();
            var grads = zeros(offset, dtype: first.dtype, device: first.device).DetachFromDisposeScope();
            var group = new Group(flat, grads, members, same.Key.Item4);
            foreach (var m in members)
            {
                using var view = group.View(flat, m);
                view.copy_(m.P);
                m.P.set_(view);
                var old = m.P.grad;
                m.P.grad = group.View(grads, m);
                old?.Dispose();
            }
            groups.Add(group);
        }
    }

    public long StepCount => groups.Select(g => g.Step).DefaultIfEmpty(0).Max();

    public IReadOnlyList<Tensor> Gradients()
    {
        Gather();
        return groups.Select(g => g.Grads).ToList();
    }

    /// <summary>Zeroes the flat gradients in place (the parameters keep their views of them).</summary>
    public void ZeroGrad()
    {
        foreach (var g in groups) g.Grads.zero_();
    }

    public void Step(double lr)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        Gather();
        foreach (var g in groups)
        {
            g.ExpAvg ??= zeros_like(g.Params).DetachFromDisposeScope();
            g.ExpAvgSq ??= zeros_like(g.Params).DetachFromDisposeScope();
            if (Amsgrad) g.MaxExpAvgSq ??= zeros_like(g.Params).DetachFromDisposeScope();
            g.Step++;
            rule.Update(g.Params, g.Grads, g.ExpAvg, g.ExpAvgSq, g.MaxExpAvgSq, g.Step, lr * g.Settings.LrScale, g.Settings.WeightDecay, rule.LerpWeight(g.Params));
        }
    }

    /// <summary>
    /// Makes sure every gradient lives in its group's buffer. Backward accumulates into an existing gradient in place,
    /// so normally nothing moves; code that assigns <c>p.grad</c> afresh gets its tensor copied back here.
    /// </summary>
    void Gather()
    {
        using var _ = no_grad();
        foreach (var g in groups)
            foreach (var m in g.Members)
            {
                using var grad = m.P.grad
                    ?? throw new InvalidOperationException($"parameter '{m.Name}' got no gradient this step; the fused AdamW needs one for every parameter (use AdamW for methods that freeze parameters as they go)");
                if (grad.storage_offset() == m.Offset) continue;
                var view = g.View(g.Grads, m);
                view.copy_(grad);
                m.P.grad = view;
            }
    }

    /// <summary>Views of the flat moments (new handles, which the caller disposes).</summary>
    public IReadOnlyDictionary<string, Tensor> StateOf(string name)
    {
        var d = new Dictionary<string, Tensor>();
        foreach (var g in groups)
            if (g.ExpAvg is not null && g.Members.FirstOrDefault(m => m.Name == name) is { } m)
            {
                (d["exp_avg"], d["exp_avg_sq"]) = (g.View(g.ExpAvg, m), g.View(g.ExpAvgSq!, m));
                if (g.MaxExpAvgSq is { } max) d["max_exp_avg_sq"] = g.View(max, m);
            }
        return d;
    }

    public void DropState(IEnumerable<string> names)
    {
        if (names.Any()) throw new NotSupportedException("the fused AdamW keeps one state for all its parameters and cannot drop some; use AdamW");
    }

    /// <summary>Zeroes the moments of <paramref name="entries"/> of the flat parameter <paramref name="name"/>.</summary>
    public void ResetEntries(string name, Tensor entries)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        foreach (var g in groups)
            foreach (var m in g.Members.Where(m => m.Name == name))
                foreach (var flat in new[] { g.ExpAvg, g.ExpAvgSq, g.MaxExpAvgSq }.OfType<Tensor>())
                    g.View(flat, m).view(-1).index_fill_(0, entries, 0);
    }

    public void Save(string path)
    {
        using var scope = NewDisposeScope();
        var d = new Dictionary<string, Tensor>();
        foreach (var g in groups)
        {
            if (g.ExpAvg is null) continue;
            foreach (var m in g.Members)
            {
                d[m.Name + ".exp_avg"] = g.View(g.ExpAvg, m);
                d[m.Name + ".exp_avg_sq"] = g.View(g.ExpAvgSq!, m);
                if (g.MaxExpAvgSq is { } max) d[m.Name + ".max_exp_avg_sq"] = g.View(max, m);
                d[m.Name + ".step"] = tensor(g.Step);
            }
        }
        SafetensorsWriter.Save(path, d, rule.Metadata());
    }

    /// <summary>Restores state written by <see cref="Save"/> or by <see cref="AdamW.Save"/> (the files are the same).</summary>
    public void Load(string path)
    {
        using var _ = no_grad();
        using var file = SafetensorsFile.Open(path);
        rule.CheckSameAmsgrad(file);
        var known = groups.SelectMany(g => g.Members).Select(m => m.Name).ToHashSet();
        var stranger = file.Names.Where(n => n.EndsWith(".step")).Select(n => n[..^".step".Length]).FirstOrDefault(n => !known.Contains(n));
        if (stranger is not null)
            throw new InvalidDataException($"{path}: optimizer state for '{stranger}', which is not a trainable parameter of this model (another adapter configuration?)");
        foreach (var g in groups)
        {
            var present = g.Members.Where(m => file.Contains(m.Name + ".step")).ToList();
            if (present.Count == 0) continue;
            if (present.Count != g.Members.Count)
                throw new InvalidDataException($"{path}: no optimizer state for '{g.Members.First(m => !present.Contains(m)).Name}', but state for other parameters");
            g.ExpAvg ??= zeros_like(g.Params).DetachFromDisposeScope();
            g.ExpAvgSq ??= zeros_like(g.Params).DetachFromDisposeScope();
            if (Amsgrad) g.MaxExpAvgSq ??= zeros_like(g.Params).DetachFromDisposeScope();
            var steps = new HashSet<long>();
            foreach (var m in g.Members)
            {
                CopyInto(file, m.Name + ".exp_avg", g.View(g.ExpAvg, m), m);
                CopyInto(file, m.Name + ".exp_avg_sq", g.View(g.ExpAvgSq, m), m);
                if (g.MaxExpAvgSq is { } max) CopyInto(file, m.Name + ".max_exp_avg_sq", g.View(max, m), m);
                steps.Add(AdamW.ReadStep(file, m.Name + ".step"));
            }
            if (steps.Count != 1) throw new InvalidDataException($"{path}: the parameters were saved at different step counts ({string.Join(", ", steps)}); resume with AdamW");
            g.Step = steps.Single();
        }
    }

    static void CopyInto(SafetensorsFile file, string key, Tensor target, Member m)
    {
        using var view = target;
        if (!file.Contains(key)) throw new InvalidDataException($"{file.Path}: missing '{key}'");
        using var t = file.Load(key);
        if (!t.shape.SequenceEqual(m.Shape) || t.dtype != view.dtype)
            throw new InvalidDataException($"{file.Path}: '{key}' is {t.dtype}[{string.Join(",", t.shape)}] but the parameter is {view.dtype}[{string.Join(",", m.Shape)}]");
        view.copy_(t);
    }

    public void Dispose()
    {
        foreach (var g in groups)
        {
            g.Params.Dispose();
            g.Grads.Dispose();
            g.ExpAvg?.Dispose();
            g.ExpAvgSq?.Dispose();
            g.MaxExpAvgSq?.Dispose();
        }
        groups.Clear();
        rule.Dispose();
    }
}
