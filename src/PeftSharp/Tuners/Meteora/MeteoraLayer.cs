using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace PeftSharp.Tuners.Meteora;

/// <summary>
/// Wraps a Linear (<c>base_layer</c>) with a MeteoRA mixture: frozen LoRA factors of L adapters stacked as
/// <c>lora_A</c> [L·r, in] and <c>lora_B</c> [out, L·r], and the trained gate <c>moe_gate</c> [L, in].
/// Per token x: picks = top-k of G x, w = softmax over the picked logits; h = W x + Σ_i w_i s_i B_i A_i x.
/// </summary>
public sealed class MeteoraLayer : Module<Tensor, Tensor>, ITunerLayer
{
    sealed record Settings(int R, int TopK, Tensor Scalings);

    readonly long inFeatures, outFeatures;
    readonly AdapterBook<Settings> book;
    readonly RoutingContext routing;

    Module<Tensor, Tensor> base_layer;
    ParameterDict lora_A = new(), lora_B = new(), moe_gate = new();

    public MeteoraLayer(Module<Tensor, Tensor> baseLayer, RoutingContext routing) : base("MeteoraLayer")
    {
        (inFeatures, outFeatures) = BaseLayers.LinearFeatures(baseLayer, "MeteoRA");
        base_layer = baseLayer;
        book = new AdapterBook<Settings>(baseLayer);
        this.routing = routing;
        RegisterComponents();
    }

    public Module BaseLayer => base_layer;
    public IAdapterBook Book => book;
    public bool CanMerge => false;
    public long InFeatures => inFeatures;

    public void MergeInPlace(IReadOnlyList<string> adapters, bool safe) =>
        throw new NotSupportedException("MeteoRA cannot be merged: each token picks its own adapters");

    /// <param name="loras">each adapter's (A [r, in], B [out, r]) for this layer, or null where it does not adapt it (zeros).</param>
    public void AddAdapter(string name, MeteoraConfig c, IReadOnlyList<(Tensor A, Tensor B)?> loras)
    {
        book.CheckNew(name);
        int l = loras.Count, r = c.R;
        if (c.TopK <= 0 || c.TopK > l) throw new ArgumentException($"MeteoRA top_k must be in 1..{l} (the number of adapters), got {c.TopK}");
        var device = BaseLayers.Weight(base_layer).device;
        using (no_grad())
        {
            var a = zeros(l * r, inFeatures, device: device);
            var b = zeros(outFeatures, l * r, device: device);
            for (int i = 0; i < l; i++)
                if (loras[i] is var (ai, bi))
                {
                    a.narrow(0, i * r, r).copy_(ai);
                    b.narrow(1, i * r, r).copy_(bi);
                }
            // The adapters stay as trained: only the gate learns. Gate init as the paper's code: N(0, 1).
            lora_A.Add(name, new Parameter(a, requires_grad: false));
            lora_B.Add(name, new Parameter(b, requires_grad: false));
            moe_gate.Add(name, new Parameter(randn(l, inFeatures, device: device)));
        }
        book.Add(name, new Settings(r, c.TopK, tensor(c.Scalings, ScalarType.Float32, device: device).DetachFromDisposeScope()));
    }

    public override Tensor forward(Tensor x)
    {
        if (book.RunsBaseOnly) return base_layer.call(x);
        using var scope = NewDisposeScope();
        var result = base_layer.call(x);
        foreach (var (a, s) in book.ActiveAdapters)
        {
            var gate = moe_gate[a];
            var flat = x.reshape(-1, inFeatures).to(gate.dtype);                                  // [T, in]
            var logits = functional.linear(flat, gate);                                            // [T, L]
            var (top, picked) = logits.topk(s.TopK, -1);
            var w = s.TopK == 1 ? ones_like(top) : functional.softmax(top, -1);
            var weights = zeros_like(logits).scatter(1, picked, w);                                // [T, L], 0 where not picked
            if (routing.Observer is not null) using (no_grad()) routing.Report(this, a, weights);
            var perRank = (weights * s.Scalings).repeat_interleave(s.R, 1);                        // [T, L·r]
            var delta = functional.linear(functional.linear(flat, lora_A[a]) * perRank, lora_B[a]); // [T, out]
            result = result + delta.reshape([.. x.shape[..^1], outFeatures]).to(result.dtype);
        }
        return result.MoveToOuterDisposeScope();
    }

    public IEnumerable<Parameter> AdapterParameters(string adapter) => [moe_gate[adapter]];

    public void RemoveTensors(string adapter)
    {
        lora_A.Remove(adapter); lora_B.Remove(adapter); moe_gate.Remove(adapter);
    }

    public IEnumerable<(string Key, Tensor Value)> StateDict(string adapter) =>
        [("lora_A.weight", lora_A[adapter]), ("lora_B.weight", lora_B[adapter]), ("moe_gate.weight", moe_gate[adapter])];

    public string Describe(string adapter) =>
        $"in={inFeatures}, out={outFeatures}, adapters={moe_gate[adapter].shape[0]}, r={book[adapter].R}";
}
