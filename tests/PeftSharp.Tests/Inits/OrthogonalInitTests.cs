using PeftSharp.Peft;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Inits;

public class OrthogonalInitTests
{
    [Fact]
    public void A_and_B_are_nonzero_with_orthogonal_rank_spaces_so_BA_is_zero()
    {
        using var scope = NewDisposeScope();
        var batches = Calib.Batches(1);
        var baseLogits = Calib.Logits(Calib.TinyLlama(), batches);
        manual_seed(1);
        var pm = PeftModel.Create(Calib.TinyLlama(), new LoraConfig { R = 6, LoraAlpha = 8, TargetModules = ["q_proj", "down_proj"], InitLoraWeights = "orthogonal" });
        foreach (var (path, layer) in Calib.Layers(pm))
        {
            var a = layer.A("default").detach().to(ScalarType.Float64);   // [r, in]: columns in R^r
            var b = layer.B("default").detach().to(ScalarType.Float64);   // [out, r]: rows in R^r
            Assert.Equal(3, linalg.matrix_rank(a.to(ScalarType.Float32)).item<long>());   // float32's tolerance: A was made in float32
            Assert.Equal(3, linalg.matrix_rank(b.to(ScalarType.Float32)).item<long>());
            var qa = linalg.svd(a, fullMatrices: false).U[.., ..3];         // A's column space in R^r
            var qb = linalg.svd(b.t(), fullMatrices: false).U[.., ..3];     // B's row space in R^r
            Assert.True(qa.t().matmul(qb).abs().max().item<double>() < 1e-5, $"{path}: the two halves of R^r must be orthogonal");
            Assert.Equal(6, linalg.matrix_rank(cat([qa, qb], 1)).item<long>());  // together they span R^r
            Assert.True(b.matmul(a).abs().max().item<double>() < 1e-5 * b.abs().max().item<double>() * a.abs().max().item<double>(), $"{path}: B A = 0");
            Assert.True(a.abs().max().item<double>() > 1e-3 && b.abs().max().item<double>() > 1e-3);
        }
        Numerics.Close(baseLogits, Calib.Logits(pm, batches), 1e-6, "identity at init");
    }

    [Fact]
    public void An_odd_rank_is_refused()
    {
        var e = Assert.Throws<ArgumentException>(() => PeftModel.Create(Calib.TinyLlama(), new LoraConfig { R = 5, TargetModules = ["q_proj"], InitLoraWeights = "orthogonal" }));
        Assert.Contains("even rank", e.Message);
        Assert.Contains("r = 5", e.Message);
    }
}
