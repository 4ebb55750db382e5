using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace PeftSharp.Tuners.Loldu;

/// <summary>
/// Wraps a Linear or Conv1D (<c>base_layer</c>) and adds, per active adapter, L (c ⊙ (U x)) with c = s z - c0:
/// <c>loldu_L</c> [out, r] = (P L)[:, :r] and <c>loldu_U</c> [r, in] frozen, <c>loldu_diag</c> z [r] and <c>loldu_scale</c>
/// s [1] trained, <c>loldu_diag_init</c> c0 = s0 D_r [r] frozen. The paper trains against the residual base
/// W - s0 P L_r D_r U_r; subtracting c0 in the adapter instead is the same function, leaves the base untouched (so an
/// adapter loads onto the original weights) and is exactly zero at init.
/// </summary>
public sealed class LolduLayer : Module<Tensor, Tensor>, IDeltaWeightLayer
{
    sealed record Settings(double Dropout);

    readonly long inFeatures, outFeatures;
    readonly AdapterBook<Settings> book;

    Module<Tensor, Tensor> base_layer;
    ParameterDict loldu_L = new(), loldu_U = new(), loldu_diag = new(), loldu_scale = new(), loldu_diag_init = new();

    public LolduLayer(Module<Tensor, Tensor> baseLayer) : base("LolduLayer")
    {
        (inFeatures, outFeatures) = BaseLayers.LinearFeatures(baseLayer, "LoLDU", conv1D: true);
        base_layer = baseLayer;
        book = new AdapterBook<Settings>(baseLayer);
        RegisterComponents();
    }

    public Module BaseLayer => base_layer;
    public IAdapterBook Book => book;
    internal Tensor L(string a) => loldu_L[a];
    internal Tensor U(string a) => loldu_U[a];

    public void AddAdapter(string name, LolduConfig c)
    {
        book.CheckNew(name);
        int r = c.R;
        long k = Math.Min(inFeatures, outFeatures);
        if (r <= 0 || r > k) throw new ArgumentException($"LoLDU r must be in [1, min(in, out) = {k}], got {r}");
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var device = BaseLayers.Weight(base_layer).device;
        Tensor l, u, d;
        if (c.InitWeights) (l, u, d) = Decompose(BaseLayers.WeightOutIn(base_layer).to(ScalarType.Float32), r);
        else (l, u, d) = (zeros(outFeatures, r, device: device), zeros(r, inFeatures, device: device), zeros(r, device: device));
        var scale = full(1, c.Alpha / r, ScalarType.Float32, device: device);
        Add(loldu_L, name, l, trainable: false);
        Add(loldu_U, name, u, trainable: false);
        Add(loldu_diag, name, d, trainable: true);
        Add(loldu_scale, name, scale, trainable: true);
        Add(loldu_diag_init, name, scale * d, trainable: false);  // the same product the forward takes, so c = 0 exactly
        book.Add(name, new Settings(c.LolduDropout));
    }

    static void Add(ParameterDict dict, string name, Tensor value, bool trainable) =>
        dict.Add(name, new Parameter(value.detach().clone().contiguous().DetachFromDisposeScope(), requires_grad: trainable));

    /// <summary>(P L)[:, :r] [out, r], U[:r] with unit diagonal [r, in], and D[:r], from W [out, in] = P L D U.</summary>
    internal static (Tensor L, Tensor U, Tensor D) Decompose(Tensor w, int r)
    {
        var (p, l, u) = linalg.lu(w);
        var d = u.diagonal()[..r];
        if (d.abs().min().item<float>() < 1e-12)
            throw new ArgumentException("LoLDU: the base weight has a zero pivot among its first r LU components; lower r");
        return (p.matmul(l[.., ..r]), u[..r] / d.view(-1, 1), d);
    }

    // c = s z - c0: what the frozen L and U are scaled by.
    Tensor Coefficients(string a) => loldu_scale[a] * loldu_diag[a] - loldu_diag_init[a];

    public Tensor DeltaWeight(string adapter)
    {
        using var scope = NewDisposeScope();
        var outIn = (loldu_L[adapter] * Coefficients(adapter)).matmul(loldu_U[adapter]);
        return BaseLayers.ToStorage(base_layer, outIn).MoveToOuterDisposeScope();
    }

    public override Tensor forward(Tensor x)
    {
        if (book.RunsBaseOnly) return base_layer.call(x);
        using var scope = NewDisposeScope();
        var result = base_layer.call(x);
        foreach (var (a, s) in book.ActiveAdapters)
        {
            var xa = x.to(ScalarType.Float32);
            if (s.Dropout > 0) xa = nn.functional.dropout(xa, s.Dropout, book.Training);
            var h = nn.functional.linear(xa, loldu_U[a]) * Coefficients(a);       // [..., r]
            result = result + nn.functional.linear(h, loldu_L[a]).to(result.dtype);
        }
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>Only the diagonal and the scale train; L, U and c0 stay as the decomposition made them.</summary>
    public IEnumerable<Parameter> AdapterParameters(string adapter) => [loldu_diag[adapter], loldu_scale[adapter]];

    public void RemoveTensors(string adapter)
    {
        foreach (var dict in new[] { loldu_L, loldu_U, loldu_diag, loldu_scale, loldu_diag_init }) dict.Remove(adapter);
    }

    public IEnumerable<(string Key, Tensor Value)> StateDict(string adapter) =>
    [
        ("loldu_L", loldu_L[adapter]), ("loldu_U", loldu_U[adapter]), ("loldu_diag", loldu_diag[adapter]),
        ("loldu_diag_init", loldu_diag_init[adapter]), ("loldu_scale", loldu_scale[adapter]),
    ];

    public string Describe(string adapter) => $"in={inFeatures}, out={outFeatures}, r={loldu_diag[adapter].shape[0]}";
}
