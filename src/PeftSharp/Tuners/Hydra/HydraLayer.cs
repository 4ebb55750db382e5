using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace PeftSharp.Tuners.Hydra;

/// <summary>
/// Wraps a Linear or GPT-2 Conv1D (<c>base_layer</c>): h = W0 x + b + s B A x + s B' A' (W0 x), a parallel LoRA
/// branch (<c>lora_A</c> [r, in], <c>lora_B</c> [out, r]) and a sequential one on the base output without its bias
/// (<c>lora_seq_A</c> [r, out], <c>lora_seq_B</c> [out, r]). The delta s (B A + B' A' W0) merges into W0.
/// </summary>
public sealed class HydraLayer : Module<Tensor, Tensor>, IDeltaWeightLayer
{
    sealed record Settings(double Scaling, double Dropout);

    readonly AdapterBook<Settings> book;

    Module<Tensor, Tensor> base_layer;
    AdapterDict<Linear> lora_A = new(), lora_B = new(), lora_seq_A = new(), lora_seq_B = new();

    public HydraLayer(Module<Tensor, Tensor> baseLayer) : base("HydraLayer")
    {
        (InFeatures, OutFeatures) = BaseLayers.LinearFeatures(baseLayer, "Hydra", conv1D: true);
        base_layer = baseLayer;
        book = new AdapterBook<Settings>(baseLayer);
        RegisterComponents();
    }

    public long InFeatures { get; }
    public long OutFeatures { get; }
    public Module BaseLayer => base_layer;
    public IAdapterBook Book => book;
    public double Scaling(string adapter) => book[adapter].Scaling;

    public void AddAdapter(string name, HydraConfig c)
    {
        book.CheckNew(name);
        if (c.R <= 0) throw new ArgumentException($"Hydra rank must be positive, got {c.R}");
        var device = BaseLayers.Weight(base_layer).device;
        // float32 whatever the base dtype, as LoRA; nn.Linear's default init is LoRA's kaiming-uniform A.
        var a = nn.Linear(InFeatures, c.R, hasBias: false, device: device);
        var b = nn.Linear(c.R, OutFeatures, hasBias: false, device: device);
        var seqA = nn.Linear(OutFeatures, c.R, hasBias: false, device: device);
        var seqB = nn.Linear(c.R, OutFeatures, hasBias: false, device: device);
        if (c.InitLoraWeights)
            using (no_grad()) { b.weight!.zero_(); seqB.weight!.zero_(); }
        lora_A.Add(name, a); lora_B.Add(name, b); lora_seq_A.Add(name, seqA); lora_seq_B.Add(name, seqB);
        book.Add(name, new Settings(c.LoraAlpha / c.R, c.LoraDropout));
    }

    /// <summary>s (B A + B' A' W0) in the base weight's storage layout.</summary>
    public Tensor DeltaWeight(string adapter)
    {
        using var scope = NewDisposeScope();
        var w0 = BaseLayers.WeightOutIn(base_layer).to(ScalarType.Float32);                  // [out, in]
        var parallel = matmul(lora_B[adapter].weight!, lora_A[adapter].weight!);              // [out, in]
        var sequential = matmul(matmul(lora_seq_B[adapter].weight!, lora_seq_A[adapter].weight!), w0); // [out, out] @ [out, in]
        var delta = (parallel + sequential) * book[adapter].Scaling;
        return BaseLayers.ToStorage(base_layer, delta).MoveToOuterDisposeScope();
    }

    public override Tensor forward(Tensor x)
    {
        if (book.RunsBaseOnly) return base_layer.call(x);
        using var scope = NewDisposeScope();
        var result = base_layer.call(x);
        // W0 x is the base output less its bias, in float32 (the adapters' dtype).
        var w0x = result.to(ScalarType.Float32);
        if (BaseLayers.Bias(base_layer) is { } bias) w0x = w0x - bias.to(ScalarType.Float32);
        var xa = x.to(ScalarType.Float32);
        foreach (var (a, s) in book.ActiveAdapters)
        {
            var parallel = lora_B[a].call(lora_A[a].call(Dropout(xa, s)));
            var sequential = lora_seq_B[a].call(lora_seq_A[a].call(Dropout(w0x, s)));
            result = result + ((parallel + sequential) * s.Scaling).to(result.dtype);
        }
        return result.MoveToOuterDisposeScope();
    }

    Tensor Dropout(Tensor t, Settings s) => s.Dropout > 0 ? nn.functional.dropout(t, s.Dropout, book.Training) : t;

    public void RemoveTensors(string adapter)
    {
        lora_A.Remove(adapter); lora_B.Remove(adapter); lora_seq_A.Remove(adapter); lora_seq_B.Remove(adapter);
    }

    public IEnumerable<(string Key, Tensor Value)> StateDict(string adapter) =>
    [
        ("lora_A.weight", lora_A[adapter].weight!), ("lora_B.weight", lora_B[adapter].weight!),
        ("lora_seq_A.weight", lora_seq_A[adapter].weight!), ("lora_seq_B.weight", lora_seq_B[adapter].weight!),
    ];

    public string Describe(string adapter) => $"in={InFeatures}, out={OutFeatures}, r={lora_A[adapter].weight!.shape[0]}";
}
