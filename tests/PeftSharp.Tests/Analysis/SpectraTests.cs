using PeftSharp.Analysis;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Analysis;

public sealed class SpectraTests
{
    [Fact]
    public void Effective_rank_is_the_exponential_of_the_entropy_of_the_normalised_spectrum()
    {
        Assert.Equal(4, Spectra.EffectiveRank(tensor(new float[] { 2, 2, 2, 2, 0 })), 6);
        // p = (0.75, 0.25): exp(-(0.75 ln 0.75 + 0.25 ln 0.25)) = 1.7548
        Assert.Equal(Math.Exp(-(0.75 * Math.Log(0.75) + 0.25 * Math.Log(0.25))), Spectra.EffectiveRank(tensor(new float[] { 3, 1 })), 6);
        Assert.Equal(1.7548, Spectra.EffectiveRank(tensor(new float[] { 3, 1 })), 4);
        Assert.Equal(0, Spectra.EffectiveRank(zeros(3)));
    }

    [Fact]
    public void Intruders_match_the_definition_written_out_with_loops()
    {
        using var scope = NewDisposeScope();
        var g = new Generator(11);
        var w0 = randn(20, 12, generator: g);
        var tuned = w0 + 3 * randn(20, 2, generator: g).matmul(randn(2, 12, generator: g));
        const int topK = 6;
        const double epsilon = 0.6;
        var scan = Spectra.Intruders(w0, tuned, topK, epsilon);

        // max_j |<U[:, i], U0[:, j]>| for the first topK columns of U, one dot product at a time.
        var u0 = linalg.svd(w0, fullMatrices: false).U.to(ScalarType.Float64);
        var u = linalg.svd(tuned, fullMatrices: false).U.to(ScalarType.Float64);
        var expectedIntruders = new List<int>();
        for (int i = 0; i < topK; i++)
        {
            double best = 0;
            for (int j = 0; j < u0.shape[1]; j++)
            {
                double dot = 0;
                for (int r = 0; r < u.shape[0]; r++) dot += u[r, i].item<double>() * u0[r, j].item<double>();
                best = Math.Max(best, Math.Abs(dot));
            }
            Assert.Equal(best, scan.Cosines[i], 5);
            if (best < epsilon) expectedIntruders.Add(i);
        }
        Assert.Equal(topK, scan.Cosines.Length);
        Assert.Equal(expectedIntruders, scan.Intruders);
        Assert.NotEmpty(scan.Intruders);                      // a case where the count is not trivially zero
        Assert.True(scan.Intruders.Length < topK, "and not trivially all");
    }

    /// <summary>
    /// W0 [24, 8] has left singular vectors spanning 8 of 24 dimensions. A large dW along a direction orthogonal to all of
    /// them becomes the top tuned vector with cosine ~0: an intruder. The same dW along W0's top vector is no intruder.
    /// </summary>
    [Fact]
    public void A_new_direction_orthogonal_to_the_base_is_an_intruder_and_an_aligned_one_is_not()
    {
        using var scope = NewDisposeScope();
        var (w0, u0, _, v0, e) = Construct();
        var orthogonal = Spectra.Intruders(w0, w0 + 10 * e.outer(v0[.., 7]), 10, 0.5);
        Assert.Equal([0], orthogonal.Intruders);
        Assert.True(orthogonal.Cosines[0] < 0.02, $"cosine {orthogonal.Cosines[0]}");
        Assert.Equal(8, orthogonal.Cosines.Length);           // top-k is cut at min(rows, cols)

        var aligned = Spectra.Intruders(w0, w0 + 10 * u0[.., 0].outer(v0[.., 0]), 10, 0.5);
        Assert.Empty(aligned.Intruders);
        Assert.All(aligned.Cosines, c => Assert.True(c > 0.999, $"cosine {c}"));
    }

    /// <summary>
    /// W0 = U0 diag(s) V0ᵀ [24, 8] with s = 8, 7, ..., 1 except s_8 = 0.1, and a unit vector <c>e</c> orthogonal to U0's columns.
    /// </summary>
    internal static (Tensor W0, Tensor U0, Tensor S, Tensor V0, Tensor E) Construct()
    {
        var g = new Generator(3);
        var (q, _) = linalg.qr(randn(24, 9, generator: g, dtype: ScalarType.Float64));
        var u0 = q[.., ..8];
        var e = q[.., 8];
        var (v0, _) = linalg.qr(randn(8, 8, generator: g, dtype: ScalarType.Float64));
        var s = tensor(new double[] { 8, 7, 6, 5, 4, 3, 2, 0.1 });
        var w0 = (u0 * s).matmul(v0.t());
        return (w0.to(ScalarType.Float32), u0.to(ScalarType.Float32), s.to(ScalarType.Float32), v0.to(ScalarType.Float32), e.to(ScalarType.Float32));
    }
}
