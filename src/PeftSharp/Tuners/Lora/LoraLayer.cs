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
    sealed record Settings(double Scaling, double Dropout);

    readonly BaseKind kind;
    readonly long inFeatures, outFeatures;
    readonly AdapterBook<Settings> book;

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
        book = new AdapterBook<Settings>(baseLayer);
        RegisterComponents();
    }

    public Module BaseLayer => base_layer;
    public IAdapterBook Book => book;
    public double Scaling(string adapter) => book[adapter].Scaling;
    public int Rank(string adapter) => kind == BaseKind.Embedding ? (int)lora_embedding_A[adapter].shape[0] : (int)lora_A[adapter].weight!.shape[0];
    public bool UsesDora(string adapter) => lora_magnitude_vector.ContainsKey(adapter);

    /// <summary>Adds an adapter of rank <paramref name="r"/>, initialised as <paramref name="config"/>'s init_lora_weights says.</summary>
    public void AddAdapter(string name, int r, double scale, LoraConfig config)
    {
        book.CheckNew(name);
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
        book.Add(name, new Settings(scale, config.LoraDropout));
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
        return ToStorage(DeltaOutIn(adapter, book[adapter].Scaling));
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

    /// <summary>Sees every input before the layer runs (data-aware inits collect statistics with it), or null.</summary>
    internal Action<Tensor>? InputTap;

    /// <summary>Adapters a data-aware init removed from this layer (EVA's rank 0), so that the save leaves the layer out.</summary>
    internal readonly HashSet<string> DroppedByCalibration = new();

    /// <summary>The adapter again with rank <paramref name="r"/> and scaling <paramref name="scale"/> (EVA's rank redistribution).</summary>
    internal void Rebuild(string adapter, int r, double scale, LoraConfig config)
    {
        var active = book.Active.ToList();
        ((ITunerLayer)this).DeleteAdapter(adapter);
        AddAdapter(adapter, r, scale, config);
        book.Active = active;
        train(base_layer.training);
    }

    public override Tensor forward(Tensor x)
    {
        InputTap?.Invoke(x);
        if (book.RowAdapters is { } rows && !book.Disabled) return MixedForward(x, rows);
        if (book.RunsBaseOnly) return base_layer.call(x);
        using var scope = NewDisposeScope();
        var result = base_layer.call(x);
        bool training = book.Training;
        foreach (var (a, s) in book.ActiveAdapters)
        {
            if (kind != BaseKind.Embedding && !UsesDora(a) && IsLowPrecision(x.dtype) && A(a).dtype != x.dtype)
                result = AddLowPrecision(result, x, a, s, training);
            else
                result = result + AdapterOutput(a, s, x, result, training).to(result.dtype);
        }
        return result.MoveToOuterDisposeScope();
    }

    public bool MixesRows => true;

    /// <summary>One batch, one adapter per row: each adapter runs on its rows only and is added into them (index_add).</summary>
    Tensor MixedForward(Tensor x, RowGroups rows)
    {
        rows.Check(x);
        using var scope = NewDisposeScope();
        var baseOutput = base_layer.call(x);
        var result = baseOutput;
        foreach (var (a, idx) in rows.Groups)
        {
            if (!book.Contains(a)) continue;
            var output = AdapterOutput(a, book[a], x.index_select(0, idx), baseOutput.index_select(0, idx), book.Training);
            result = result.index_add(0, idx, output.to(result.dtype), 1);
        }
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>What adapter <paramref name="a"/> adds to <paramref name="baseOutput"/> for input <paramref name="x"/>.</summary>
    Tensor AdapterOutput(string a, Settings s, Tensor x, Tensor baseOutput, bool training)
    {
        if (kind == BaseKind.Embedding)
        {
            var afterA = A(a).t().index_select(0, x.reshape(-1)).view([.. x.shape, -1]);
            return matmul(afterA, B(a).t()) * s.Scaling;
        }
        var xa = x.to(A(a).dtype);
        var dropped = s.Dropout > 0 ? nn.functional.dropout(xa, s.Dropout, training) : xa;
        return UsesDora(a)
            ? Dora.Forward(this, a, dropped, baseOutput, s.Dropout > 0 && training)
            : lora_B[a].call(lora_A[a].call(dropped)) * s.Scaling;
    }

    static bool IsLowPrecision(ScalarType t) => t is ScalarType.BFloat16 or ScalarType.Float16;

    /// <summary>
    /// Mixed precision as autocast would run it, without autocast: float32 master weights are cast to the
    /// activations' dtype (r x in and out x r: cheap) instead of the activations to float32 ([tokens x in]: not),
    /// the scaling is folded into B, and the product and the sum with the base output are one addmm (no separate
    /// [tokens x out] product). Gradients reach the float32 weights through the casts.
    /// </summary>
    Tensor AddLowPrecision(Tensor result, Tensor x, string a, Settings s, bool training)
    {
        var dtype = x.dtype;
        var dropped = s.Dropout > 0 && training ? nn.functional.dropout(x, s.Dropout, training) : x;
        var afterA = nn.functional.linear(dropped, A(a).to(dtype));                    // [..., r]
        var scaledB = (B(a) * s.Scaling).to(dtype);                                    // [out, r]
        var flat = result.reshape(-1, outFeatures);
        var sum = addmm(flat, afterA.reshape(-1, afterA.shape[^1]), scaledB.t(), 1, 1);
        if (lora_B[a].bias is { } bias) sum = sum + (bias * s.Scaling).to(dtype);
        return sum.view(result.shape);
    }

    readonly Dictionary<string, (Tensor A, Tensor B)> initial = new();

    /// <summary>Remembers A and B as initialised, for PiSSA/OLoRA's conversion back to a plain LoRA delta on save.</summary>
    internal void RecordInitial(string a) =>
        initial[a] = (A(a).detach().clone().DetachFromDisposeScope(), B(a).detach().clone().DetachFromDisposeScope());

    internal (Tensor A, Tensor B)? Initial(string a) => initial.TryGetValue(a, out var x) ? x : null;

    internal Tensor LoraBranch(string a, Tensor x) => lora_B[a].call(lora_A[a].call(x));
    internal Parameter Magnitude(string a) => lora_magnitude_vector[a].weight;

    /// <summary>W + s B A (DoRA: its re-normalised weight), and the lora_B bias into the base bias, per adapter.</summary>
    public void MergeInPlace(IReadOnlyList<string> adapters, bool safe)
    {
        using var _ = no_grad();
        var weight = BaseLayers.Weight(base_layer);
        foreach (var a in book.ToMerge(adapters).ToList())
        {
            using var scope = NewDisposeScope();
            var newWeight = UsesDora(a) ? Dora.MergedWeight(this, a) : weight.to(ScalarType.Float32) + DeltaWeight(a).to(ScalarType.Float32);
            var values = new List<(Parameter, Tensor)> { (weight, newWeight) };
            if (kind != BaseKind.Embedding && lora_B[a].bias is { } lb && BaseLayers.Bias(base_layer) is { } bias)
                values.Add((bias, bias.to(ScalarType.Float32) + lb * book[a].Scaling));
            book.Write(a, values, safe);
        }
    }

    public void RemoveTensors(string adapter)
    {
        lora_A.Remove(adapter); lora_B.Remove(adapter);
        if (lora_embedding_A.ContainsKey(adapter)) { lora_embedding_A.Remove(adapter); lora_embedding_B.Remove(adapter); }
        lora_magnitude_vector.Remove(adapter);
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

    public string Describe(string adapter) =>
        $"base layer in={inFeatures}, out={outFeatures}, r={Rank(adapter)}{(UsesDora(adapter) ? ", DoRA" : "")}{(kind == BaseKind.Embedding ? ", embedding" : "")}";
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
