using PeftSharp.Analysis;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Analysis;

public sealed class MitigationTests
{
    /// <summary>
    /// dW = 10 e v8ᵀ with e orthogonal to W0's columns and v8 W0's last right singular vector (s8 = 0.1). Then W0 + dW has the
    /// intruder triple ((s8 u8 + 10 e) / n, n, v8), and the mitigated delta has the closed form
    /// dW + (lambda - 1)(s8 u8 + 10 e) v8ᵀ = (10 lambda e + (lambda - 1) s8 u8) v8ᵀ, of rank 1.
    /// </summary>
    [Theory]
    [InlineData(0.75)]
    [InlineData(0.0)]
    [InlineData(0.3)]
    public void The_mitigated_delta_is_the_intruder_scaled_by_lambda(double lambda)
    {
        using var scope = NewDisposeScope();
        var (w0, u0, s, v0, e) = SpectraTests.Construct();
        var dw = 10 * e.outer(v0[.., 7]);
        const double scaling = 2.0;
        var r = IntruderMitigation.Reduce(w0, dw, scaling, rank: 2, transposed: false, new IntruderOptions(), lambda)!.Value;
        Assert.Equal([0], r.Intruders);
        Assert.Equal(new long[] { 2, 8 }, r.A.shape);
        Assert.Equal(new long[] { 24, 2 }, r.B.shape);
        var expected = (10 * lambda * e + (lambda - 1) * s[7] * u0[.., 7]).outer(v0[.., 7]);
        Numerics.Close(expected, scaling * r.B.matmul(r.A), 1e-5, "scaling * B @ A");
        // PEFT splits sqrt(S) evenly: B's and A's first column / row have the same norm.
        Assert.Equal(r.B[.., 0].norm().item<float>(), r.A[0].norm().item<float>(), 4);
    }

    [Fact]
    public void Lambda_one_gives_back_the_adapter_delta()
    {
        using var scope = NewDisposeScope();
        var (w0, u0, _, v0, e) = SpectraTests.Construct();
        var dw = 10 * e.outer(v0[.., 7]) + 3 * u0[.., 2].outer(v0[.., 5]);    // rank 2, one intruder
        var r = IntruderMitigation.Reduce(w0, dw, 0.5, rank: 2, transposed: false, new IntruderOptions(), 1.0)!.Value;
        Assert.NotEmpty(r.Intruders);
        Numerics.Close(dw, 0.5 * r.B.matmul(r.A), 2e-5, "delta at lambda 1");
    }

    [Fact]
    public void Transposed_layers_get_factors_in_PEFTs_layout_and_no_intruders_means_no_change()
    {
        using var scope = NewDisposeScope();
        var (w0, u0, _, v0, e) = SpectraTests.Construct();
        var dw = 10 * e.outer(v0[.., 7]);                                    // stored layout [24, 8]: a Conv1D [in, out]
        var r = IntruderMitigation.Reduce(w0, dw, 1, rank: 3, transposed: true, new IntruderOptions(), 0.5)!.Value;
        Assert.Equal(new long[] { 3, 24 }, r.A.shape);                       // [r, in]
        Assert.Equal(new long[] { 8, 3 }, r.B.shape);                        // [out, r]
        var expected = (5 * e + (0.5 - 1) * 0.1f * u0[.., 7]).outer(v0[.., 7]);
        Numerics.Close(expected.t(), r.B.matmul(r.A), 1e-5, "B @ A is the transposed delta");

        Assert.Null(IntruderMitigation.Reduce(w0, 10 * u0[.., 0].outer(v0[.., 0]), 1, 2, false, new IntruderOptions(), 0.5));
    }
}
