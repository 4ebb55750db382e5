using static TorchSharp.torch;

namespace PeftSharp.Tuners.SparseFt.S2ft;

/// <summary>
/// A sparse delta made of whole rows R (or whole columns C) of a Linear weight [out, in], applied to the output:
/// rows: y[..., R] += x Δᵀ with Δ = values viewed [|R|, in]; columns: y += x[..., C] Δᵀ with Δ = values viewed
/// [out, |C|]. The same numbers as adding the scattered values to W, but backward forms only Δ's gradient
/// (dy[..., R]ᵀ x or dyᵀ x[..., C]) instead of the whole weight's.
/// </summary>
internal sealed class S2ftSlice : ISparseSlice
{
    readonly Tensor units;
    readonly bool rows;

    S2ftSlice(Tensor units, bool rows) => (this.units, this.rows) = (units, rows);

    /// <summary>The slice of <paramref name="d"/>; refuses a support that is not whole rows (or columns) in row-major order.</summary>
    public static S2ftSlice Of(SparseWeightDelta d, bool rows, long inFeatures)
    {
        using var scope = NewDisposeScope();
        long outFeatures = d.Shape[0];
        var units = (rows ? d.Indices.div(inFeatures, RoundingMode.floor) : d.Indices.remainder(inFeatures)).unique().Item1;
        long n = rows ? inFeatures : outFeatures;
        var expected = rows
            ? (units.unsqueeze(1) * inFeatures + arange(inFeatures, device: units.device).unsqueeze(0)).flatten()
            : (arange(outFeatures, device: units.device).unsqueeze(1) * inFeatures + units.unsqueeze(0)).flatten();
        if (units.shape[0] * n != d.K || !expected.eq(d.Indices).all().item<bool>())
            throw new InvalidOperationException($"an S²FT delta must be whole {(rows ? "rows" : "columns")} of its weight in row-major order");
        return new S2ftSlice(units.DetachFromDisposeScope(), rows);
    }

    public Tensor AddTo(Tensor y, Tensor x, Tensor values)
    {
        using var scope = NewDisposeScope();
        var v = values.to(x.dtype);
        var result = rows
            ? y.index_add(-1, units, x.matmul(v.view(units.shape[0], -1).t()), 1)
            : y + x.index_select(-1, units).matmul(v.view(-1, units.shape[0]).t());
        return result.MoveToOuterDisposeScope();
    }
}
