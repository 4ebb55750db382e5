using PeftSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace PeftSharp.Tuners.Lora;

/// <summary>
/// Wraps a Linear, GPT-2 Conv1D or Embedding (<c>base_layer</c>) and adds, per active adapter,
/// scaling * B(A(dropout(x))): h = W x + (alpha/r) B A x. Module and state-dict names are PEFT's
/// (<c>lora_A.default.weight</c> in memory, <c>lora_A.weight</c> on disk).
/// </summary>
public sealed class LoraLayer : Module<Tensor, Tensor>, IDeltaWeightLayer
{
    readonly BaseKind kind;
    readonly long inFeatures, outFeatures;
    readonly Dictionary<string, double> scaling = new();
    readonly Dictionary<string, double> dropoutP = new();
    readonly Dictionary<string, bool> fanInFanOut = new();
    readonly List<string> merged = new();
    readonly List<(string Adapter, Tensor Delta)> mergedDeltas = new();

    Module<Tensor, Tensor> base_layer;
    AdapterDict<Linear> lora_A = new(), lora_B = new();
    ParameterDict lora_embedding_A = new(), lora_embedding_B = new();
    AdapterDict<DoraMagnitude> lora_magnitude_vector = new();

    public LoraLayer(Module<Tensor, Tensor> baseLayer) : base("LoraLayer")
    {
        base_layer = baseLayer;
        kind = BaseLayers.KindOf(baseLayer);
        if (kind == BaseKind.Other) throw new NotSupportedException($"LoRA cannot wrap a {baseLayer.GetType().Name}");
        (inFeatures, outFeatures) = BaseLayers.Features(baseLayer);
        RegisterComponents();
        train(baseLayer.training); // new modules start in training mode; follow the model (else dropout stays on at inference)
    }

    public Module BaseLayer => base_layer;
    public IReadOnlyCollection<string> AdapterNames => scaling.Keys;
    public IReadOnlyList<string> ActiveAdapters { get; set; } = [];
    public bool Disabled { get; set; }
    public IReadOnlyList<string> MergedAdapters => merged;
    public bool CanMerge => true;
    public double Scaling(string adapter) => scaling[adapter];
    public int Rank(string adapter) => kind == BaseKind.Embedding ? (int)lora_embedding_A[adapter].shape[0] : (int)lora_A[adapter].weight!.shape[0];
    public bool UsesDora(string adapter) => lora_magnitude_vector.ContainsKey(adapter);

    /// <summary>Adds an adapter of rank <paramref name="r"/>, initialised as <paramref name="config"/>'s init_lora_weights says.</summary>
    public void AddAdapter(string name, int r, double scale, LoraConfig config)
    {
        if (scaling.ContainsKey(name)) throw new ArgumentException($"adapter '{name}' already exists on this layer");
        if (r <= 0) throw new ArgumentException($"LoRA rank must be positive, got {r}");
        var dtype = ScalarType.Float32; // adapter weights train in float32 whatever the base dtype
        var device = BaseLayers.Weight(base_layer).device;
        using (no_grad())
        {
            if (kind == BaseKind.Embedding)
            {
                lora_embedding_A.Add(name, new Parameter(randn(r, inFeatures, dtype: dtype, device: device)));
                lora_embedding_B.Add(name, new Parameter(randn(outFeatures, r, dtype: dtype, device: device)));
            }
            else
            {
                lora_A.Add(name, nn.Linear(inFeatures, r, hasBias: false, dtype: dtype, device: device));
                lora_B.Add(name, nn.Linear(r, outFeatures, hasBias: config.LoraBias, dtype: dtype, device: device));
            }
        }
        scaling[name] = scale;
        dropoutP[name] = config.LoraDropout;
        fanInFanOut[name] = config.FanInFanOut;
        LoraInit.Initialise(this, name, config);
        if (config.UseDora)
        {
            if (kind == BaseKind.Embedding) throw new NotSupportedException("DoRA on embeddings is not supported");
            lora_magnitude_vector.Add(name, new DoraMagnitude(WeightNorm(name, LoraProduct(name), scale)));
        }
    }

    internal Parameter A(string adapter) => kind == BaseKind.Embedding ? lora_embedding_A[adapter] : lora_A[adapter].weight!;
    internal Parameter B(string adapter) => kind == BaseKind.Embedding ? lora_embedding_B[adapter] : lora_B[adapter].weight!;
    internal Module<Tensor, Tensor> Base => base_layer;

    /// <summary>B @ A as [out, in] (for embeddings, [dim, num]^T handled by the caller).</summary>
    internal Tensor LoraProduct(string adapter) => kind == BaseKind.Embedding
        ? matmul(B(adapter), A(adapter)).t()  // [num, dim], the embedding's own layout
        : matmul(B(adapter), A(adapter));    // [out, in]

    Tensor DeltaOutIn(string adapter, double scale) => LoraProduct(adapter) * scale;

    internal BaseKind Kind => kind;

    /// <summary>scaling * B @ A in the base weight's storage layout (Conv1D: [in, out]; embedding: [num, dim]).</summary>
    public Tensor DeltaWeight(string adapter)
    {
        if (UsesDora(adapter)) throw new InvalidOperationException("a DoRA adapter's effect is not an additive delta; merge it instead");
        return ToStorage(DeltaOutIn(adapter, scaling[adapter]));
    }

    Tensor ToStorage(Tensor outIn) => kind == BaseKind.Conv1D ? outIn.t() : outIn;

    // ||W + s * B A|| per output row, the DoRA norm (detached: PEFT treats it as a constant in backward).
    internal Tensor WeightNorm(string adapter, Tensor loraOutIn, double scale)
    {
        using var scope = NewDisposeScope();
        var w = BaseLayers.WeightOutIn(base_layer).to(ScalarType.Float32);
        var total = w + scale * loraOutIn.to(ScalarType.Float32);
        return linalg.vector_norm(total, 2, [1]).detach().MoveToOuterDisposeScope();
    }

    public override Tensor forward(Tensor x)
    {
        if (Disabled)
        {
            if (merged.Count > 0) UnmergeInPlace();
            return base_layer.call(x);
        }
        if (merged.Count > 0 || ActiveAdapters.Count == 0) return base_layer.call(x);
        using var scope = NewDisposeScope();
        var result = base_layer.call(x);
        foreach (var a in ActiveAdapters)
        {
            if (!scaling.ContainsKey(a)) continue;
            if (kind == BaseKind.Embedding)
            {
                var afterA = A(a).t().index_select(0, x.reshape(-1)).view([.. x.shape, -1]);
                result = result + (matmul(afterA, B(a).t()) * scaling[a]).to(result.dtype);
                continue;
            }
            if (!UsesDora(a) && IsLowPrecision(x.dtype) && A(a).dtype != x.dtype)
            {
                result = AddLowPrecision(result, x, a);
                continue;
            }
            var xa = x.to(A(a).dtype);
            var dropped = dropoutP[a] > 0 ? nn.functional.dropout(xa, dropoutP[a], training) : xa;
            if (UsesDora(a))
                result = result + Dora.Forward(this, a, dropped, result, dropoutP[a] > 0 && training).to(result.dtype);
            else
                result = result + (lora_B[a].call(lora_A[a].call(dropped)) * scaling[a]).to(result.dtype);
        }
        return result.MoveToOuterDisposeScope();
    }

    static bool IsLowPrecision(ScalarType t) => t is ScalarType.BFloat16 or ScalarType.Float16;

    /// <summary>
    /// Mixed precision as autocast would run it, without autocast: float32 master weights are cast to the
    /// activations' dtype (r x in and out x r: cheap) instead of the activations to float32 ([tokens x in]: not),
    /// the scaling is folded into B, and the product and the sum with the base output are one addmm (no separate
    /// [tokens x out] product). Gradients reach the float32 weights through the casts.
    /// </summary>
    Tensor AddLowPrecision(Tensor result, Tensor x, string a)
    {
        var dtype = x.dtype;
        var dropped = dropoutP[a] > 0 && training ? nn.functional.dropout(x, dropoutP[a], training) : x;
        var afterA = nn.functional.linear(dropped, A(a).to(dtype));                    // [..., r]
        var scaledB = (B(a) * scaling[a]).to(dtype);                                   // [out, r]
        var flat = result.reshape(-1, outFeatures);
        var sum = addmm(flat, afterA.reshape(-1, afterA.shape[^1]), scaledB.t(), 1, 1);
        if (lora_B[a].bias is { } bias) sum = sum + (bias * scaling[a]).to(dtype);
        return sum.view(result.shape);
    }

    readonly Dictionary<string, (Tensor A, Tensor B)> initial = new();

    /// <summary>Remembers A and B as initialised, for PiSSA/OLoRA's conversion back to a plain LoRA delta on save.</summary>
    internal void RecordInitial(string a) =>
        initial[a] = (A(a).detach().clone().DetachFromDisposeScope(), B(a).detach().clone().DetachFromDisposeScope());

    internal (Tensor A, Tensor B)? Initial(string a) => initial.TryGetValue(a, out var x) ? x : null;

    internal Tensor LoraBranch(string a, Tensor x) => lora_B[a].call(lora_A[a].call(x));
    internal Parameter Magnitude(string a) => lora_magnitude_vector[a].weight;

    public void MergeInPlace(IReadOnlyList<string> adapters, bool safe)
    {
        using var _ = no_grad();
        var weight = BaseLayers.Weight(base_layer);
        foreach (var a in adapters)
        {
            if (!scaling.ContainsKey(a) || merged.Contains(a)) continue;
            using var scope = NewDisposeScope();
            Tensor newWeight;
            if (UsesDora(a)) newWeight = Dora.MergedWeight(this, a);
            else newWeight = weight.to(ScalarType.Float32) + DeltaWeight(a).to(ScalarType.Float32);
            if (safe && !isfinite(newWeight).all().item<bool>())
                throw new InvalidOperationException($"merging adapter '{a}' would put NaN or inf into the base weight; it was not merged");
            var delta = (newWeight - weight.to(ScalarType.Float32)).DetachFromDisposeScope();
            weight.copy_(newWeight.to(weight.dtype));
            if (config_bias(a) is { } lb && BaseLayers.Bias(base_layer) is { } bias) bias.add_(lb.to(bias.dtype));
            mergedDeltas.Add((a, delta));
            merged.Add(a);
        }
    }

    Tensor? config_bias(string a) => kind != BaseKind.Embedding && lora_B[a].bias is { } b ? b * scaling[a] : null;

    public void UnmergeInPlace()
    {
        using var _ = no_grad();
        var weight = BaseLayers.Weight(base_layer);
        for (int i = mergedDeltas.Count - 1; i >= 0; i--)
        {
            var (a, delta) = mergedDeltas[i];
            weight.copy_((weight.to(ScalarType.Float32) - delta).to(weight.dtype));
            if (config_bias(a) is { } lb && BaseLayers.Bias(base_layer) is { } bias) bias.sub_(lb.to(bias.dtype));
            delta.Dispose();
        }
        mergedDeltas.Clear();
        merged.Clear();
    }

    public void DeleteAdapter(string adapter)
    {
        if (merged.Contains(adapter)) throw new InvalidOperationException($"adapter '{adapter}' is merged; unmerge it before deleting");
        lora_A.Remove(adapter); lora_B.Remove(adapter);
        if (lora_embedding_A.ContainsKey(adapter)) { lora_embedding_A.Remove(adapter); lora_embedding_B.Remove(adapter); }
        lora_magnitude_vector.Remove(adapter);
        scaling.Remove(adapter); dropoutP.Remove(adapter); fanInFanOut.Remove(adapter);
        ActiveAdapters = ActiveAdapters.Where(a => a != adapter).ToList();
    }

    public IEnumerable<(string Key, Tensor Value)> StateDict(string adapter)
    {
        if (kind == BaseKind.Embedding)
        {
            yield return ("lora_embedding_A", lora_embedding_A[adapter]);
            yield return ("lora_embedding_B", lora_embedding_B[adapter]);
            yield break;
        }
        yield return ("lora_A.weight", lora_A[adapter].weight!);
        yield return ("lora_B.weight", lora_B[adapter].weight!);
        if (lora_B[adapter].bias is { } b) yield return ("lora_B.bias", b);
        if (UsesDora(adapter)) yield return ("lora_magnitude_vector", Magnitude(adapter));
    }

    public void LoadStateDict(string adapter, IReadOnlyDictionary<string, Tensor> tensors, string modulePath, string source)
    {
        using var _ = no_grad();
        foreach (var (key, target) in StateDict(adapter).ToList())
        {
            if (!tensors.TryGetValue(key, out var t))
                throw new InvalidDataException($"{source}: missing tensor '{modulePath}.{key}' for adapter '{adapter}'");
            if (!t.shape.SequenceEqual(target.shape))
                throw new InvalidDataException($"{source}: tensor '{modulePath}.{key}' has shape [{string.Join(",", t.shape)}] but the " +
                    $"layer expects [{string.Join(",", target.shape)}] (base layer in={inFeatures}, out={outFeatures}, r={Rank(adapter)}): " +
                    "is this adapter for another model, or is r / rank_pattern in adapter_config.json wrong?");
            target.copy_(t);
        }
    }

    public IEnumerable<Parameter> AdapterParameters(string adapter) => StateDict(adapter).Select(kv => (Parameter)kv.Value);
}

/// <summary>DoRA's learnable magnitude, one scale per output feature (PEFT: <c>lora_magnitude_vector.default.weight</c>).</summary>
public sealed class DoraMagnitude : Module
{
    public Parameter weight;

    public DoraMagnitude(Tensor initial) : base("DoraMagnitude")
    {
        weight = new Parameter(initial.detach().clone());
        RegisterComponents();
    }
}
