using PeftSharp.Peft;
using PeftSharp.Tuners;
using PeftSharp.Tuners.Loldu;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Inits;

public class LolduTests
{
    static LolduConfig Config(int r) => new() { R = r, Alpha = 16, TargetModules = ["q_proj", "down_proj"] };

    static Dictionary<string, LolduLayer> Layers(PeftModel pm) => pm.TunerLayers().ToDictionary(x => x.Path, x => (LolduLayer)x.Layer);

    [Fact]
    public void Full_rank_L_D_U_rebuild_the_weight_and_the_factors_are_triangular()
    {
        using var scope = NewDisposeScope();
        var pm = PeftModel.Create(Calib.TinyLlama(), Config(64));      // q_proj [64, 64], down_proj [64, 128]: r = min = 64
        foreach (var (path, layer) in Layers(pm))
        {
            var w = BaseLayers.WeightOutIn(layer.BaseLayer).detach();
            var state = ((ITunerLayer)layer).StateDict("default").ToDictionary(kv => kv.Key, kv => kv.Value.detach());
            var rebuilt = (state["loldu_L"] * state["loldu_diag"]).matmul(state["loldu_U"]);
            Numerics.Close(w, rebuilt, 1e-5, $"{path}: P L D U");
            var u = state["loldu_U"];
            Numerics.Close(ones(64), u.diagonal(), 1e-6, $"{path}: U has a unit diagonal");
            Assert.Equal(0, u.tril(-1).abs().max().item<float>());
            Numerics.Close(state["loldu_scale"] * state["loldu_diag"], state["loldu_diag_init"], 0, $"{path}: c0 = s0 D");
        }
    }

    [Fact]
    public void It_starts_as_the_base_and_only_the_diagonal_and_the_scale_train()
    {
        using var scope = NewDisposeScope();
        var batches = Calib.Batches(1);
        var baseLogits = Calib.Logits(Calib.TinyLlama(), batches);
        var pm = PeftModel.Create(Calib.TinyLlama(), Config(8));
        Numerics.Close(baseLogits, Calib.Logits(pm, batches), 0, "identity at init");
        var trainable = pm.TrainableParameters();
        Assert.Equal(2 * 2 * 2, trainable.Count);                                  // 2 layers x 2 modules, each diag + scale
        Assert.All(trainable, p => Assert.Matches(@"\.loldu_(diag|scale)\.default$", p.Name));
        Assert.Equal(4 * (8 + 1), trainable.Sum(p => p.P.numel()));
    }

    [Fact]
    public void Merged_equals_the_unmerged_forward()
    {
        using var scope = NewDisposeScope();
        var batches = Calib.Batches(1);
        var pm = PeftModel.Create(Calib.TinyLlama(), Config(8));
        using (no_grad())
            foreach (var p in pm.TrainableParameters()) p.P.mul_(1 + 0.5 * randn_like(p.P));
        var unmerged = Calib.Logits(pm, batches);
        Assert.True(Numerics.MaxAbsDiff(unmerged, Calib.Logits(Calib.TinyLlama(), batches)) > 1e-3, "the adapter must act for this test to mean anything");
        pm.MergeAdapter();
        Numerics.Close(unmerged, Calib.Logits(pm, batches), 1e-4, "merged");
    }
}
