using PeftSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace PeftSharp.Tuners.SparseFt;

/// <summary>How a sparse delta is saved: ours (flat int64 indices) or PEFT's SHiRA (int32 [2, K] rows and columns).</summary>
public enum SparseFormat { SparseFt, Shira }

/// <summary>
/// Wraps a Linear or GPT-2 Conv1D (<c>base_layer</c>) and adds sparse deltas: h = x (W + Σ_a scatter(idx_a, v_a))ᵀ + b,
/// the deltas of the active adapters summed (Ansell et al.'s composition by addition). The forward builds the changed
/// weight as one copy of W with the K values added (index_add), so its backward gathers K gradients and no gradient of
/// W is kept. Saved as <c>sparse_ft_indices</c>/<c>sparse_ft_values</c>, or as SHiRA's <c>shira_indices</c>/<c>shira_weight</c>.
/// </summary>
public sealed class SparseFtLayer : Module<Tensor, Tensor>, IDeltaWeightLayer
{
    readonly AdapterBook<SparseFormat> book;
    readonly Dictionary<string, SparseWeightDelta> deltas = new();

    Module<Tensor, Tensor> base_layer;
    ParameterDict sparse_ft_values = new(), sparse_ft_dense = new();

    public SparseFtLayer(Module<Tensor, Tensor> baseLayer) : base("SparseFtLayer")
    {
        (InFeatures, OutFeatures) = BaseLayers.LinearFeatures(baseLayer, "sparse fine-tuning", conv1D: true);
        base_layer = baseLayer;
        book = new AdapterBook<SparseFormat>(baseLayer);
        RegisterComponents();
    }

    public long InFeatures { get; }
    public long OutFeatures { get; }
    public Module BaseLayer => base_layer;
    public IAdapterBook Book => book;
    public Parameter Weight => BaseLayers.Weight(base_layer);

    /// <summary>The adapter's delta on this weight.</summary>
    public SparseWeightDelta Delta(string adapter) =>
        deltas.TryGetValue(adapter, out var d) ? d : throw new KeyNotFoundException($"no sparse adapter '{adapter}' in this layer");

    /// <param name="indices">the initial support: distinct flat indices into the weight as stored.</param>
    /// <param name="randomValues">start from random values instead of zeros (tests: a fresh adapter that changes the model).</param>
    public void AddAdapter(string name, Tensor indices, SparseFormat format, bool randomValues)
    {
        book.CheckNew(name);
        var w = Weight;
        var values = randomValues ? randn(indices.shape[0], device: w.device) * 0.02 : zeros(indices.shape[0], device: w.device);
        var p = new Parameter(values.DetachFromDisposeScope());
        sparse_ft_values.Add(name, p);
        deltas[name] = new SparseWeightDelta(indices.to(ScalarType.Int64).to(w.device).DetachFromDisposeScope(), p, w.shape);
        book.Add(name, format);
    }

    /// <summary>Starts training the whole weight densely for <paramref name="adapter"/> (LT-SFT's phase 1).</summary>
    public void StartDense(string adapter)
    {
        var d = Delta(adapter);
        d.Dense = new Parameter(zeros(d.Shape, device: Weight.device).DetachFromDisposeScope());
        sparse_ft_dense.Add(adapter, d.Dense);
    }

    /// <summary>
    /// Ends dense training: the dense change is zeroed, frozen and no longer counts. Its buffer stays allocated: the
    /// trainer's parameter list and checkpoints have it with its shape, and a resumed run must find the same.
    /// </summary>
    public void EndDense(string adapter)
    {
        var d = Delta(adapter);
        if (d.Dense is not { } dense) return;
        dense.requires_grad = false;
        using (no_grad()) dense.zero_();
        d.Dense = null;
    }

    public Tensor DeltaWeight(string adapter) => Delta(adapter).ToDense();

    // Scatter-add: entries outside the support are not touched, so they stay bit-identical (no -0.0 + 0.0).
    void ITunerLayer.MergeInPlace(IReadOnlyList<string> adapters, bool safe)
    {
        foreach (var a in book.ToMerge(adapters).ToList())
        {
            using var scope = NewDisposeScope();
            var merged = Weight.detach().clone();
            Delta(a).ScatterAddInto(merged);
            book.Write(a, [(Weight, merged)], safe);
        }
    }

    public override Tensor forward(Tensor x)
    {
        if (book.RunsBaseOnly) return base_layer.call(x);
        using var scope = NewDisposeScope();
        Tensor w = Weight;
        var slices = new List<SparseWeightDelta>();
        foreach (var (a, _) in book.ActiveAdapters)
            if (deltas[a].Slice is null) w = deltas[a].AddTo(w);
            else slices.Add(deltas[a]);
        var bias = BaseLayers.Bias(base_layer);
        var y = base_layer is Conv1D
            ? (bias is null ? x.matmul(w) : addmm(bias, x.reshape(-1, x.shape[^1]), w, 1, 1).view([.. x.shape[..^1], OutFeatures]))
            : functional.linear(x, w, bias);
        foreach (var d in slices) y = d.Slice!.AddTo(y, x, d.Values);
        return y.MoveToOuterDisposeScope();
    }

    public void RemoveTensors(string adapter)
    {
        sparse_ft_values.Remove(adapter);
        if (sparse_ft_dense.ContainsKey(adapter)) sparse_ft_dense.Remove(adapter);
        deltas.Remove(adapter);
    }

    public IEnumerable<Parameter> AdapterParameters(string adapter)
    {
        var d = Delta(adapter);
        return d.Dense is { } dense ? [d.Values, dense] : [d.Values];
    }

    public IEnumerable<(string Key, Tensor Value)> StateDict(string adapter)
    {
        var d = Delta(adapter);
        return book[adapter] == SparseFormat.Shira
            ? [("shira_indices", ShiraIndices(d.Indices)), ("shira_weight", d.Values)]
            : [("sparse_ft_indices", d.Indices), ("sparse_ft_values", d.Values)];
    }

    // SHiRA keeps [2, K] int32 (row, column) coordinates of the weight [out, in].
    Tensor ShiraIndices(Tensor flat) => stack([flat.div(InFeatures, RoundingMode.floor), flat.remainder(InFeatures)]).to(ScalarType.Int32);

    public void LoadStateDict(string adapter, IReadOnlyDictionary<string, Tensor> tensors, string modulePath, string source)
    {
        using var scope = NewDisposeScope();
        var d = Delta(adapter);
        var targets = StateDict(adapter).ToList();
        var indexKey = targets[0].Key;
        // Indices may come as int32 (SHiRA) or int64: compare shapes, then convert.
        var loaded = targets[0].Value.shape.SequenceEqual(tensors.GetValueOrDefault(indexKey)?.shape ?? []) ? tensors[indexKey] : null;
        var asTargets = new Dictionary<string, Tensor>(tensors);
        if (loaded is not null) asTargets[indexKey] = loaded.to(targets[0].Value.dtype);
        AdapterTensors.CopyInto(targets, asTargets, modulePath, adapter, source, Describe(adapter));
        var raw = asTargets[indexKey].to(ScalarType.Int64);
        var flat = book[adapter] == SparseFormat.Shira ? raw[0] * InFeatures + raw[1] : raw;
        bool inRange = book[adapter] == SparseFormat.Shira
            ? raw[0].ge(0).all().item<bool>() && raw[0].lt(OutFeatures).all().item<bool>() && raw[1].ge(0).all().item<bool>() && raw[1].lt(InFeatures).all().item<bool>()
            : flat.ge(0).all().item<bool>() && flat.lt(d.Numel).all().item<bool>();
        if (!inRange)
            throw new InvalidDataException($"{source}: tensor '{modulePath}.{indexKey}' has indices outside the weight {AdapterTensors.Shape(Weight)}: is this adapter for another model?");
        if (flat.unique().Item1.shape[0] != flat.shape[0])
            throw new InvalidDataException($"{source}: tensor '{modulePath}.{indexKey}' repeats an index; a sparse delta changes each entry once");
        using (no_grad()) d.Indices.copy_(flat);
    }

    public string Describe(string adapter)
    {
        var d = Delta(adapter);
        return $"weight {AdapterTensors.Shape(Weight)}, {d.K} entries";
    }
}
