using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace PeftSharp.Tuners.Miss;

/// <summary>The three MiSS variants PEFT's <c>init_weights</c> selects.</summary>
public enum MissMode { Balance, Bat, Mini }

/// <summary>
/// Wraps a Linear (<c>base_layer</c>) with one <c>miss_block</c> per adapter. Balance and mini add
/// (Σ_k x[k r : (k+1) r]) M to the output, x zero-padded to a multiple of r (M tiled to [r, out] for mini);
/// bat runs the base with W' = W + ΔW(W) where ΔW_ab = W_ab B_a + B_a over r×r blocks (a: output block, b: input block).
/// </summary>
public sealed class MissLayer : Module<Tensor, Tensor>, IDeltaWeightLayer
{
    sealed record Settings(MissMode Mode, int R, int MiniR, double Dropout);

    readonly long inFeatures, outFeatures;
    readonly AdapterBook<Settings> book;

    Module<Tensor, Tensor> base_layer;
    ParameterDict miss_block = new();

    public MissLayer(Module<Tensor, Tensor> baseLayer) : base("MissLayer")
    {
        (inFeatures, outFeatures) = BaseLayers.LinearFeatures(baseLayer, "MiSS");
        base_layer = baseLayer;
        book = new AdapterBook<Settings>(baseLayer);
        RegisterComponents();
    }

    public Module BaseLayer => base_layer;
    public IAdapterBook Book => book;
    public MissMode Mode(string adapter) => book[adapter].Mode;
    public Parameter Block(string adapter) => miss_block[adapter];

    public void AddAdapter(string name, MissConfig c)
    {
        book.CheckNew(name);
        int r = c.R;
        if (r <= 0) throw new ArgumentException($"MiSS r must be positive, got {r}");
        var mode = c.InitWeights switch
        {
            "true" or "false" => MissMode.Balance,
            "bat" => MissMode.Bat,
            "mini" => MissMode.Mini,
            _ => throw new ArgumentException($"init_weights '{c.InitWeights}' is not a MiSS mode; use true, false, \"bat\" or \"mini\""),
        };
        if (mode == MissMode.Bat && (inFeatures % r != 0 || outFeatures % r != 0))
            throw new ArgumentException($"MiSS \"bat\" needs in and out features divisible by r into [r, r] blocks; this layer is [{outFeatures}, {inFeatures}], r={r}");
        if (mode == MissMode.Mini && (c.MiniR <= 0 || outFeatures % c.MiniR != 0))
            throw new ArgumentException($"MiSS \"mini\" needs out_features ({outFeatures}) divisible by mini_r ({c.MiniR})");
        long[] shape = mode switch
        {
            MissMode.Bat => [outFeatures / r, r, r],
            MissMode.Mini => [r, c.MiniR],
            _ => [r, outFeatures],
        };
        var device = BaseLayers.Weight(base_layer).device;
        using var _ = no_grad();
        var block = new Parameter(zeros(shape, dtype: ScalarType.Float32, device: device));
        if (c.InitWeights == "false") nn.init.kaiming_uniform_(block, Math.Sqrt(5));
        miss_block.Add(name, block);
        book.Add(name, new Settings(mode, r, c.MiniR, c.MissDropout));
    }

    // Balance and mini: M as [r, out] (mini's [r, mini_r] tiled along the output).
    Tensor FullBlock(string a)
    {
        var s = book[a];
        var m = miss_block[a];
        return s.Mode == MissMode.Mini ? m.repeat(1, outFeatures / s.MiniR) : m;
    }

    // Bat: ΔW over r×r blocks, W_ab B_a + B_a, for the given weight [out, in].
    Tensor BatDelta(string a, Tensor w)
    {
        using var scope = NewDisposeScope();
        int r = book[a].R;
        var b = miss_block[a];                                                         // [out/r, r, r]
        var blocks = w.reshape(outFeatures / r, r, inFeatures / r, r).permute(2, 0, 1, 3); // [in/r, out/r, r, r]
        var delta = (matmul(blocks, b) + b).permute(1, 2, 0, 3).reshape(outFeatures, inFeatures);
        return delta.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The adapter's ΔW [out, in]. Balance/mini: ΔW[o, i] = M[i mod r, o]. Bat: ΔW depends on W, and is taken
    /// against the base weight as it is now.
    /// </summary>
    public Tensor DeltaWeight(string adapter)
    {
        using var scope = NewDisposeScope();
        var s = book[adapter];
        if (s.Mode == MissMode.Bat)
            return BatDelta(adapter, BaseLayers.Weight(base_layer).detach().to(ScalarType.Float32)).MoveToOuterDisposeScope();
        long tiles = (inFeatures + s.R - 1) / s.R;
        return FullBlock(adapter).t().repeat(1, tiles)[.., ..(int)inFeatures].contiguous().MoveToOuterDisposeScope();
    }

    public override Tensor forward(Tensor x)
    {
        if (book.RunsBaseOnly) return base_layer.call(x);
        using var scope = NewDisposeScope();
        var active = book.ActiveAdapters.ToList();
        Tensor result;
        if (active.Any(a => a.Settings.Mode == MissMode.Bat))
        {
            // Bat adapters rewrite the weight, one after the other; the base weight itself stays frozen.
            var w = BaseLayers.Weight(base_layer).detach().to(ScalarType.Float32);
            foreach (var (a, _) in active.Where(a => a.Settings.Mode == MissMode.Bat)) w = w + BatDelta(a, w);
            result = nn.functional.linear(x.to(w.dtype), w, BaseLayers.Bias(base_layer)?.to(w.dtype)).to(x.dtype);
        }
        else result = base_layer.call(x);
        foreach (var (a, s) in active.Where(a => a.Settings.Mode != MissMode.Bat))
        {
            var m = FullBlock(a);                                    // [r, out]
            var xa = x.to(m.dtype);
            long pad = (s.R - xa.shape[^1] % s.R) % s.R;
            if (pad > 0) xa = nn.functional.pad(xa, [0, pad]);
            if (s.Dropout > 0) xa = nn.functional.dropout(xa, s.Dropout, book.Training);
            var folded = xa.reshape([.. xa.shape[..^1], xa.shape[^1] / s.R, s.R]).sum(-2); // [.., r]: the r-blocks of x summed
            result = result + matmul(folded, m).to(result.dtype);
        }
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>Bat adapters merge first, in order (each sees the weight the previous one made), as the forward applies them.</summary>
    public void MergeInPlace(IReadOnlyList<string> adapters, bool safe)
    {
        var ordered = book.ToMerge(adapters).OrderBy(a => book[a].Mode == MissMode.Bat ? 0 : 1).ToList();
        book.MergeDeltas(ordered, DeltaWeight, safe);
    }

    public void RemoveTensors(string adapter) => miss_block.Remove(adapter);

    public IEnumerable<(string Key, Tensor Value)> StateDict(string adapter) => [("miss_block", miss_block[adapter])];

    public string Describe(string adapter)
    {
        var s = book[adapter];
        return $"in={inFeatures}, out={outFeatures}, r={s.R}, mode {s.Mode.ToString().ToLowerInvariant()}{(s.Mode == MissMode.Mini ? $", mini_r={s.MiniR}" : "")}";
    }
}
