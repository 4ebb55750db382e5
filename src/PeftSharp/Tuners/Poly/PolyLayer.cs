using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace PeftSharp.Tuners.Poly;

/// <summary>
/// Wraps a Linear (<c>base_layer</c>) with a Poly/MHR skill inventory: <c>poly_lora_A</c> [q, S, in/q, r],
/// <c>poly_lora_B</c> [q, S, r, out/q] and the router <c>poly_router.module_logits</c> (PEFT's names). Row b of a batch,
/// of task t_b with weights w_b [q, S]: A_b [in, r] stacks Σ_s w_b[j,s] A[j,s] over the q blocks, B_b [r, out] lines
/// up Σ_s w_b[j,s] B[j,s] likewise, and h_b = W x_b + x_b A_b B_b / r.
/// </summary>
public sealed class PolyLayer : Module<Tensor, Tensor>, ITunerLayer
{
    sealed record Settings(int R);

    readonly long inFeatures, outFeatures;
    readonly AdapterBook<Settings> book;
    readonly RoutingContext routing;

    Module<Tensor, Tensor> base_layer;
    ParameterDict poly_lora_A = new(), poly_lora_B = new();
    AdapterDict<PolyRouter> poly_router = new();

    public PolyLayer(Module<Tensor, Tensor> baseLayer, RoutingContext routing) : base("PolyLayer")
    {
        (inFeatures, outFeatures) = BaseLayers.LinearFeatures(baseLayer, "Poly");
        base_layer = baseLayer;
        book = new AdapterBook<Settings>(baseLayer);
        this.routing = routing;
        RegisterComponents();
    }

    public Module BaseLayer => base_layer;
    public IAdapterBook Book => book;
    public bool CanMerge => false;

    public void MergeInPlace(IReadOnlyList<string> adapters, bool safe) =>
        throw new NotSupportedException("Poly adapters cannot be merged: each row mixes its skills by its own task");

    public void AddAdapter(string name, PolyConfig c)
    {
        book.CheckNew(name);
        if (c.R <= 0) throw new ArgumentException($"Poly r must be positive, got {c.R}");
        if (c.PolyType != "poly") throw new ArgumentException($"poly_type '{c.PolyType}' is not supported; PEFT has only \"poly\"");
        if (c.NTasks <= 0 || c.NSkills <= 0 || c.NSplits <= 0)
            throw new ArgumentException($"Poly n_tasks, n_skills and n_splits must be positive, got {c.NTasks}, {c.NSkills}, {c.NSplits}");
        if (inFeatures % c.NSplits != 0 || outFeatures % c.NSplits != 0)
            throw new ArgumentException($"Poly n_splits={c.NSplits} must divide this layer's in ({inFeatures}) and out ({outFeatures}) features");
        int q = c.NSplits, s = c.NSkills, r = c.R;
        var device = BaseLayers.Weight(base_layer).device;
        using (no_grad())
        {
            // As PEFT (after mttl): each block of A drawn like nn.Linear(in/q, r).weight and stored transposed; B too unless zero.
            var a = empty(q, s, inFeatures / q, r, device: device);
            var b = zeros(q, s, r, outFeatures / q, device: device);
            for (int skill = 0; skill < s; skill++)
                for (int split = 0; split < q; split++)
                    a[split, skill].copy_(KaimingLinear(r, inFeatures / q).t());
            if (!c.InitWeights)
                for (int skill = 0; skill < s; skill++)
                    for (int split = 0; split < q; split++)
                        b[split, skill].copy_(KaimingLinear(outFeatures / q, r).t());
            poly_lora_A.Add(name, new Parameter(a));
            poly_lora_B.Add(name, new Parameter(b));
        }
        var router = new PolyRouter(c.NTasks, q, s, device);
        router.Reset();
        poly_router.Add(name, router);
        book.Add(name, new Settings(r));
    }

    // nn.Linear's default weight init (kaiming-uniform, a = √5) of an [rows, cols] weight, from the global generator.
    static Tensor KaimingLinear(long rows, long cols)
    {
        using var w = empty(rows, cols);
        nn.init.kaiming_uniform_(w, Math.Sqrt(5));
        return w.clone();
    }

    public override Tensor forward(Tensor x)
    {
        if (book.RunsBaseOnly) return base_layer.call(x);
        using var scope = NewDisposeScope();
        var result = base_layer.call(x);
        foreach (var (a, s) in book.ActiveAdapters)
        {
            var weights = poly_router[a].Weights(routing.TaskIds, book.Training);      // [B, q, S]
            routing.Report(this, a, weights.flatten(1));
            long bs = weights.shape[0];
            if (x.dim() != 3 || x.shape[0] != bs)
                throw new ArgumentException($"Poly got {bs} task ids for a batch of shape [{string.Join(",", x.shape)}]: give one task id per row");
            var mixedA = einsum("bqs,qsdr->bqdr", weights, poly_lora_A[a]).reshape(bs, inFeatures, s.R);                    // [B, in, r]
            var mixedB = einsum("bqs,qsrd->bqrd", weights, poly_lora_B[a]).transpose(1, 2).reshape(bs, s.R, outFeatures); // [B, r, out]
            var xa = x.to(mixedA.dtype);
            result = result + (xa.bmm(mixedA).bmm(mixedB) / s.R).to(result.dtype);
        }
        return result.MoveToOuterDisposeScope();
    }

    public void RemoveTensors(string adapter)
    {
        poly_lora_A.Remove(adapter); poly_lora_B.Remove(adapter); poly_router.Remove(adapter);
    }

    public IEnumerable<(string Key, Tensor Value)> StateDict(string adapter) =>
        [("poly_lora_A", poly_lora_A[adapter]), ("poly_lora_B", poly_lora_B[adapter]), ("poly_router.module_logits", poly_router[adapter].Logits)];

    public string Describe(string adapter)
    {
        var shape = poly_lora_A[adapter].shape;
        return $"in={inFeatures}, out={outFeatures}, n_splits={shape[0]}, n_skills={shape[1]}, r={shape[3]}, n_tasks={poly_router[adapter].Logits.shape[0]}";
    }
}
