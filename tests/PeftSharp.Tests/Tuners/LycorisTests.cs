using PeftSharp.Peft;
using PeftSharp.Tuners;
using PeftSharp.Tuners.LoHa;
using PeftSharp.Tuners.LoKr;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tuners;

public class LycorisTests
{
    [Theory]
    [InlineData(256, -1, 16, 16)]
    [InlineData(128, -1, 8, 16)]
    [InlineData(127, -1, 1, 127)]
    [InlineData(128, 4, 4, 32)]
    [InlineData(64, 3, 2, 32)] // 3 does not divide 64: divisors are walked up to 3
    [InlineData(32, -1, 4, 8)]
    public void Factorization_follows_lycoris(int dim, int factor, int m, int n) =>
        Assert.Equal((m, n), LoKrShapes.Factorize(dim, factor));

    [Fact]
    public void LoKr_splits_a_factor_only_when_r_is_below_half_its_size()
    {
        // q_proj 64x64: W1 [8,8], W2 [8,8]; r=4 is not < 8/2, so both whole (the fixture's layout).
        Assert.Equal(new LoKrShapes(8, 8, 8, 8, true, true), LoKrShapes.For(64, 64, 4, decomposeBoth: true, -1));
        // r=2 < 4: W2 becomes a rank-2 product; W1 too, but only with decompose_both.
        Assert.Equal(new LoKrShapes(8, 8, 8, 8, true, false), LoKrShapes.For(64, 64, 2, decomposeBoth: false, -1));
        Assert.Equal(new LoKrShapes(8, 8, 8, 8, false, false), LoKrShapes.For(64, 64, 2, decomposeBoth: true, -1));
    }

    [Fact]
    public void LoKr_saved_with_other_decomposition_is_refused_by_name()
    {
        using var scope = NewDisposeScope();
        var f = new AdapterFixture("llama-lokr");
        var pm = PeftModel.Create(f.LoadBase(), new LoKrConfig { R = 2, TargetModules = ModuleSelector.Of("q_proj", "v_proj") });
        var dir = Path.Combine(IO.SafetensorsTests.TempDir(), "lokr-r2");
        pm.Save(dir);
        // The same weights with the fixture's config (r=4: whole W2) cannot be read: lokr_w2_a/b have no place.
        File.Copy(Path.Combine(f.Folder, PeftConfigJson.FileName), Path.Combine(dir, PeftConfigJson.FileName), overwrite: true);
        var e = Assert.Throws<InvalidDataException>(() => PeftModel.FromPretrained(f.LoadBase(), dir));
        Assert.Contains("lokr_w2_a", e.Message);
    }

    [Fact]
    public void Rank_and_module_dropout_act_in_training_only()
    {
        using var scope = NewDisposeScope();
        var f = new AdapterFixture("llama-loha");
        var pm = PeftModel.FromPretrained(f.LoadBase(), f.Folder);
        pm.Base.eval();
        using var _ = no_grad();
        var inputs = f.Inputs();
        Numerics.Close(f.Expected("logits"), pm.Forward(inputs), 1e-4, "eval");
        var dropping = PeftModel.Create(f.LoadBase(), new LoHaConfig { R = 4, TargetModules = ModuleSelector.Of("q_proj", "v_proj"), InitWeights = false, RankDropout = 0.5, ModuleDropout = 0.2 });
        dropping.Base.train();
        manual_seed(3);
        var a = dropping.Forward(inputs);
        var b = dropping.Forward(inputs);
        Assert.True(Numerics.MaxAbsDiff(a, b) > 1e-4, "two training forwards should drop differently");
        dropping.Base.eval();
        Numerics.Close(dropping.Forward(inputs), dropping.Forward(inputs), 0, "eval is deterministic");
    }
}
