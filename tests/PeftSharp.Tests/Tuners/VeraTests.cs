using PeftSharp.IO;
using PeftSharp.Peft;
using PeftSharp.Tuners;
using PeftSharp.Tuners.Vera;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tuners;

public class VeraTests
{
    [Fact]
    public void Projections_from_the_seed_are_the_ones_PEFT_drew()
    {
        using var scope = NewDisposeScope();
        using var f = SafetensorsFile.Open(Path.Combine(new AdapterFixture("llama-vera").Folder, PeftModel.WeightsFile));
        var p = VeraProjections.Generate(8, 64, 64, seed: 0, CPU, saved: true);
        Assert.True(Numerics.Same(f.Load(VeraProjections.KeyA), p.A), "vera_A");
        Assert.True(Numerics.Same(f.Load(VeraProjections.KeyB), p.B), "vera_B");
    }

    [Fact]
    public void Without_save_projection_the_projections_are_regenerated_on_load()
    {
        using var scope = NewDisposeScope();
        var f = new AdapterFixture("llama-vera");
        var config = (VeraConfig)PeftConfigJson.Load(Path.Combine(f.Folder, PeftConfigJson.FileName)) with { SaveProjection = false };
        var pm = PeftModel.Create(f.LoadBase(), config);
        using (var saved = SafetensorsFile.Open(Path.Combine(f.Folder, PeftModel.WeightsFile)))
            foreach (var (path, layer) in pm.TunerLayers())
                layer.LoadStateDict("default", layer.StateDict("default").ToDictionary(kv => kv.Key, kv => saved.Load($"base_model.model.{path}.{kv.Key}")), path, "fixture");
        pm.Base.eval();
        using var _ = no_grad();
        Numerics.Close(f.Expected("logits"), pm.Forward(f.Inputs()), 1e-4, "with regenerated projections");
        var dir = Path.Combine(Tests.IO.SafetensorsTests.TempDir(), "vera-nosave");
        pm.Save(dir);
        using (var ours = SafetensorsFile.Open(Path.Combine(dir, PeftModel.WeightsFile)))
            Assert.DoesNotContain(ours.Names, n => n.Contains("vera_A") || n.Contains("vera_B"));
        Numerics.Close(f.Expected("logits"), PeftModel.FromPretrained(f.LoadBase(), dir).Forward(f.Inputs()), 1e-4, "loaded back");
    }

    [Fact]
    public void Adapters_with_different_seeds_cannot_share_a_model()
    {
        using var scope = NewDisposeScope();
        var f = new AdapterFixture("llama-vera");
        var pm = PeftModel.Create(f.LoadBase(), new VeraConfig { R = 4, TargetModules = ModuleSelector.Of("q_proj") });
        var e = Assert.Throws<ArgumentException>(() => pm.AddAdapter("other", new VeraConfig { R = 4, TargetModules = ModuleSelector.Of("q_proj"), ProjectionPrngKey = 1 }));
        Assert.Contains("projection_prng_key", e.Message);
    }
}
