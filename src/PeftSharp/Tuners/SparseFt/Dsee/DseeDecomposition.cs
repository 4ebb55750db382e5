using static TorchSharp.torch;

namespace PeftSharp.Tuners.SparseFt.Dsee;

/// <summary>W ≈ L + S by GoDec: L the best rank-k fit of W − S, S the K largest entries of W − L.</summary>
internal static class DseeDecomposition
{
    /// <summary>The support of S after <paramref name="iterations"/> alternations: K flat indices, ascending.</summary>
    public static Tensor SparseSupport(Tensor weight, int rank, long k, int iterations)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var w = weight.detach().to(ScalarType.Float32);
        var s = zeros_like(w);
        Tensor support = null!;
        for (int i = 0; i < iterations; i++)
        {
            var (u, sv, vh) = linalg.svd(w - s, fullMatrices: false);
            long r = Math.Min(rank, sv.shape[0]);
            var low = (u.narrow(1, 0, r) * sv.narrow(0, 0, r)).matmul(vh.narrow(0, 0, r));
            var residual = (w - low).flatten();
            support = SparseWeightDelta.TopK(residual.abs(), k);
            s = zeros_like(residual).index_put_(residual.index_select(0, support), support).view(w.shape);
        }
        return support.MoveToOuterDisposeScope();
    }
}
