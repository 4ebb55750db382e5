using System.Text.RegularExpressions;
using PeftSharp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.SparseFt.S2ft;

/// <summary>
/// S²FT (Yang et al. 2024, "S²FT: Efficient, Scalable and Generalizable LLM Fine-tuning by Structured Sparsity",
/// https://arxiv.org/abs/2412.06289; code: Infini-AI-Lab/S2FT). In each decoder layer a few attention heads and FFN
/// channels are chosen at random, and only their coupled structures train: for heads H, the rows of W_q, W_k, W_v
/// and the columns of W_o that belong to H; for channels C, the rows of W_up and W_gate and the columns of W_down:
/// W_q' = W_q + P_H Δ_q, W_o' = W_o + Δ_o P_Hᵀ, W_down' = W_down + Δ_down P_Cᵀ, ... (P the selection). Selecting
/// and then computing densely on the slices is what makes it cheap: the trainer's forward adds x Δᵀ on the chosen
/// rows (or x_C Δᵀ for chosen columns), so backward computes the slices' gradients only (<see cref="S2ftSlice"/>).
/// With grouped-query attention the unit is a key/value head and the query heads that share it. The budget picks
/// ⌊density · n_kv_heads⌋ head groups and ⌊density · intermediate_size⌋ channels per layer (at least one each), so
/// each target changes the same share of its entries, at most ceil(density · numel). The delta is saved as any sparse
/// delta (indices + values), whole rows or columns.
/// </summary>
internal sealed partial class S2ftMethod : ISparseMethod
{
    public string Name => "s2ft";

    /// <summary>How one target couples: rows (q, k, v, up, gate) or columns (o, down) of heads or channels.</summary>
    internal enum Part { QueryRows, KeyValueRows, OutputColumns, ChannelRows, ChannelColumns }

    internal static Part PartOf(string path) => path.Split('.')[^1] switch
    {
        "q_proj" => Part.QueryRows,
        "k_proj" or "v_proj" => Part.KeyValueRows,
        "o_proj" => Part.OutputColumns,
        "gate_proj" or "up_proj" => Part.ChannelRows,
        "down_proj" => Part.ChannelColumns,
        _ => throw new NotSupportedException($"S²FT trains the coupled rows and columns of q/k/v/o_proj and gate/up/down_proj; '{path}' is none of these (set --target-modules to those)"),
    };

    internal static bool IsRows(Part p) => p is Part.QueryRows or Part.KeyValueRows or Part.ChannelRows;

    public long Budget(SparseTarget target, SparseFtConfig config)
    {
        var units = Units(target, config);
        return units.shape[0] * (IsRows(PartOf(target.Path)) ? target.Layer.InFeatures : target.Layer.OutFeatures);
    }

    public Tensor InitialSupport(SparseTarget target, SparseFtConfig config)
    {
        using var scope = NewDisposeScope();
        var units = Units(target, config).to(target.Weight.device);
        long n = target.Layer.InFeatures, m = target.Layer.OutFeatures;
        var support = IsRows(PartOf(target.Path))
            ? (units.unsqueeze(1) * n + arange(n, device: units.device).unsqueeze(0)).flatten()
            : (arange(m, device: units.device).unsqueeze(1) * n + units.unsqueeze(0)).flatten();
        return support.MoveToOuterDisposeScope();
    }

    /// <summary>The rows (or columns) of the target's weight [out, in] that train, ascending.</summary>
    internal static Tensor Units(SparseTarget target, SparseFtConfig config)
    {
        var m = target.Model ?? throw new InvalidOperationException("S²FT needs the model's config to find heads and channels");
        if (target.Layer.BaseLayer is not TorchSharp.Modules.Linear)
            throw new NotSupportedException($"S²FT needs separate projections (Linear layers); '{target.Path}' is a {target.Layer.BaseLayer.GetType().Name}");
        var part = PartOf(target.Path);
        var (groups, channels) = Selection(LayerIndex(target.Path), m, config);
        int qPerKv = m.NumHeads / m.NumKvHeads;
        var units = part switch
        {
            Part.QueryRows or Part.OutputColumns => Expand(groups.SelectMany(g => Enumerable.Range(g * qPerKv, qPerKv)), m.HeadDim),
            Part.KeyValueRows => Expand(groups, m.HeadDim),
            _ => channels.Select(c => (long)c).ToArray(),
        };
        long size = IsRows(part) ? target.Layer.OutFeatures : target.Layer.InFeatures;
        long expected = part switch
        {
            Part.QueryRows or Part.OutputColumns => (long)m.NumHeads * m.HeadDim,
            Part.KeyValueRows => (long)m.NumKvHeads * m.HeadDim,
            _ => m.IntermediateSize,
        };
        if (size != expected)
            throw new ArgumentException($"S²FT: '{target.Path}' has {size} {(IsRows(part) ? "rows" : "columns")} but the model's config implies {expected}; is it a fused or unusual projection?");
        return tensor(units, dtype: ScalarType.Int64);
    }

    static long[] Expand(IEnumerable<int> heads, int headDim) => heads.SelectMany(h => Enumerable.Range(h * headDim, headDim).Select(i => (long)i)).ToArray();

    /// <summary>
    /// The layer's head groups and channels: the first ⌊density · n⌋ of random permutations drawn from a generator
    /// seeded with random_seed + the layer's index, so that every projection of the layer sees the same choice.
    /// </summary>
    internal static (int[] Groups, int[] Channels) Selection(int layer, ModelConfig m, SparseFtConfig config)
    {
        int groups = (int)Math.Floor((decimal)config.Density * m.NumKvHeads), channels = (int)Math.Floor((decimal)config.Density * m.IntermediateSize);
        if (groups < 1)
            throw new ArgumentException($"S²FT: density {config.Density} selects none of the {m.NumKvHeads} key/value head groups; use a density of at least 1/{m.NumKvHeads}");
        if (channels < 1)
            throw new ArgumentException($"S²FT: density {config.Density} selects none of the {m.IntermediateSize} FFN channels; use a density of at least 1/{m.IntermediateSize}");
        using var g = new Generator((ulong)(config.RandomSeed + layer));
        using var headPerm = randperm(m.NumKvHeads, generator: g, dtype: ScalarType.Int64);
        using var channelPerm = randperm(m.IntermediateSize, generator: g, dtype: ScalarType.Int64);
        return (headPerm.data<long>().Take(groups).Select(i => (int)i).Order().ToArray(),
            channelPerm.data<long>().Take(channels).Select(i => (int)i).Order().ToArray());
    }

    internal static int LayerIndex(string path) =>
        LayerNumber().Match(path) is { Success: true } match ? int.Parse(match.Groups[1].Value)
            : throw new NotSupportedException($"S²FT selects heads and channels per decoder layer; '{path}' names no layer index");

    [GeneratedRegex(@"\.(\d+)\.")]
    private static partial Regex LayerNumber();

    public ISparseSchedule? Schedule(IReadOnlyList<SparseTarget> targets, SparseFtConfig config) => new S2ftSchedule(targets);

    /// <summary>Training computes on the slices (partial backward); nothing changes between steps.</summary>
    sealed class S2ftSchedule : ISparseSchedule
    {
        public S2ftSchedule(IReadOnlyList<SparseTarget> targets)
        {
            foreach (var t in targets) t.Delta.Slice = S2ftSlice.Of(t.Delta, IsRows(PartOf(t.Path)), t.Layer.InFeatures);
        }

        public void AfterOptimizerStep(int step) { }
    }
}
