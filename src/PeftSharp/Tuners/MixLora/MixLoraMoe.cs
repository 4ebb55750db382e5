using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace PeftSharp.Tuners.MixLora;

/// <summary>
/// Wraps a gated feed-forward block (<c>base_layer</c> with gate_proj, up_proj, down_proj: Llama, Gemma, Mistral, Qwen)
/// as MixLoRA's sparse mixture. Per token x (flattened to [N, H]): router weights w = top-k of softmax(x Gᵀ), renormalised;
/// expert e computes down_e(act(gate_e(x)) * up_e(x)) where proj_e(v) = proj(v) + s·B_e A_e dropout(v) on targeted
/// projections and the base projection elsewhere; y = Σ_{e picked} w_e expert_e(x). gate_proj and up_proj of the base run
/// once for all tokens, as in MixLoRA; each expert runs on its own tokens only.
/// </summary>
public sealed class MixLoraMoe : Module<Tensor, Tensor>, ITunerLayer
{
    public static readonly string[] Projections = ["gate_proj", "up_proj", "down_proj"];

    sealed record Settings(int TopK, double Scaling, double Dropout, double Jitter);

    readonly AdapterBook<Settings> book;
    readonly RoutingContext routing;
    readonly Func<Tensor, Tensor> act;
    readonly Module<Tensor, Tensor> gate, up, down;
    readonly Dictionary<string, Tensor> lastLogits = new();

    Module<Tensor, Tensor> base_layer;
    AdapterDict<MixLoraExperts> mixlora = new();

    public MixLoraMoe(Module<Tensor, Tensor> ffn, string path, string hiddenAct, RoutingContext routing) : base("MixLoraMoe")
    {
        var children = ffn.named_children().ToDictionary(c => c.name, c => c.module);
        if (!Projections.All(children.ContainsKey))
            throw new NotSupportedException($"MixLoRA needs a gated feed-forward block with gate_proj, up_proj and down_proj; " +
                $"'{path}' ({ffn.GetType().Name}) has {string.Join(", ", children.Keys)}");
        (gate, up, down) = (Proj(children, "gate_proj", path), Proj(children, "up_proj", path), Proj(children, "down_proj", path));
        act = hiddenAct switch
        {
            "silu" or "swish" => x => functional.silu(x),
            "gelu_pytorch_tanh" or "gelu_tanh" => Models.Layers.Activations.GeluTanh,
            "gelu" => x => functional.gelu(x),
            _ => throw new NotSupportedException($"MixLoRA: hidden_act '{hiddenAct}' of '{path}' is not supported (silu, gelu, gelu_pytorch_tanh)"),
        };
        base_layer = ffn;
        book = new AdapterBook<Settings>(ffn);
        this.routing = routing;
        RegisterComponents();
    }

    static Module<Tensor, Tensor> Proj(Dictionary<string, nn.Module> children, string name, string path) =>
        children[name] as Module<Tensor, Tensor> ?? throw new NotSupportedException($"MixLoRA cannot call '{path}.{name}'");

    public Module BaseLayer => base_layer;
    public IAdapterBook Book => book;
    public bool CanMerge => false;

    public void MergeInPlace(IReadOnlyList<string> adapters, bool safe) =>
        throw new NotSupportedException("MixLoRA experts cannot be merged: each token picks its own experts");

    public void AddAdapter(string name, MixLoraConfig c, IReadOnlyCollection<string> targeted)
    {
        book.CheckNew(name);
        var features = new Dictionary<string, (long, long)>();
        foreach (var (proj, module) in new[] { ("gate_proj", gate), ("up_proj", up), ("down_proj", down) })
        {
            var f = BaseLayers.Features(module is ITunerLayer w ? w.BaseLayer : module);
            if (targeted.Contains(proj)) features[proj] = f;
        }
        long hidden = BaseLayers.Features(gate is ITunerLayer g ? g.BaseLayer : gate).In;
        var device = BaseLayers.Weight(gate is ITunerLayer gw ? gw.BaseLayer : gate).device;
        mixlora.Add(name, new MixLoraExperts(hidden, c.NumExperts, c.R, features, c.RouterInitRange, device));
        double scaling = c.UseRslora ? c.LoraAlpha / Math.Sqrt(c.R) : c.LoraAlpha / c.R;
        book.Add(name, new Settings(c.TopK, scaling, c.LoraDropout, c.JitterNoise));
    }

    /// <summary>The router logits [N, E] of the adapter's last training forward (null if none since the last take).</summary>
    public Tensor? TakeRouterLogits(string adapter) => lastLogits.Remove(adapter, out var t) ? t : null;

    public override Tensor forward(Tensor x)
    {
        if (book.RunsBaseOnly) return base_layer.call(x);
        if (book.Active.Count(book.Contains) > 1) throw new NotSupportedException("MixLoRA runs one active adapter at a time on a feed-forward block");
        using var scope = NewDisposeScope();
        var (a, s) = book.ActiveAdapters.First();
        var experts = mixlora[a];
        var shape = x.shape;
        var flat = x.reshape(-1, shape[^1]);                                                         // [N, H]
        var routerIn = flat.to(ScalarType.Float32);
        if (book.Training && s.Jitter > 0) routerIn = routerIn * empty_like(routerIn).uniform_(1 - s.Jitter, 1 + s.Jitter);
        var logits = functional.linear(routerIn, experts.Gate);                                      // [N, E]
        if (book.Training && is_grad_enabled())
        {
            if (lastLogits.Remove(a, out var old)) old.Dispose();
            lastLogits[a] = logits.DetachFromDisposeScope();
        }
        var (topW, topI) = functional.softmax(logits, -1).topk(s.TopK, -1);                          // [N, k]
        topW = topW / topW.sum(-1, keepdim: true);
        if (routing.Observer is not null)
            using (no_grad()) routing.Report(this, a, zeros_like(logits).scatter(1, topI, topW));

        var commonGate = gate.call(flat);
        var commonUp = up.call(flat);
        var output = zeros(flat.shape[0], shape[^1], dtype: ScalarType.Float32, device: flat.device);
        for (int e = 0; e < experts.Experts; e++)
        {
            var picked = topI.eq(e);                                                                 // [N, k]
            var rows = picked.any(-1).nonzero().squeeze(-1);
            if (rows.shape[0] == 0) continue;
            var weight = (topW * picked).sum(-1).index_select(0, rows).unsqueeze(-1);               // [n, 1]
            var xe = flat.index_select(0, rows);
            var g = WithLora(commonGate.index_select(0, rows), xe, experts.Lora(e, "gate_proj"), s);
            var u = WithLora(commonUp.index_select(0, rows), xe, experts.Lora(e, "up_proj"), s);
            var h = act(g) * u;
            var y = WithLora(down.call(h), h, experts.Lora(e, "down_proj"), s);
            output = output.index_add(0, rows, y.to(ScalarType.Float32) * weight, 1);
        }
        return output.to(x.dtype).reshape(shape).MoveToOuterDisposeScope();
    }

    Tensor WithLora(Tensor baseOut, Tensor input, (TorchSharp.Modules.Parameter A, TorchSharp.Modules.Parameter B)? lora, Settings s)
    {
        if (lora is not var (a, b)) return baseOut;
        var v = input.to(a.dtype);
        if (s.Dropout > 0) v = functional.dropout(v, s.Dropout, book.Training);
        return baseOut + (functional.linear(functional.linear(v, a), b) * s.Scaling).to(baseOut.dtype);
    }

    public void RemoveTensors(string adapter)
    {
        mixlora.Remove(adapter);
        if (lastLogits.Remove(adapter, out var t)) t.Dispose();
    }

    public IEnumerable<(string Key, Tensor Value)> StateDict(string adapter) => mixlora[adapter].StateDict();

    public string Describe(string adapter)
    {
        var m = mixlora[adapter];
        return $"experts={m.Experts}, hidden={m.Gate.shape[1]}, r={m.Lora(0, "gate_proj")?.A.shape[0] ?? m.Lora(0, "down_proj")?.A.shape[0]}";
    }
}
