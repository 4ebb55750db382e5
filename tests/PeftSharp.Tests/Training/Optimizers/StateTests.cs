using PeftSharp.Training;

namespace PeftSharp.Tests.Training.Optimizers;

/// <summary>Every optimizer's state can be read per parameter (what a method that grows ranks would carry over).</summary>
public class StateTests
{
    [Theory]
    [InlineData("loraplus", true)]
    [InlineData("loraplus", false)]
    [InlineData("lorafa", true)]
    [InlineData("lorapro", true)]
    public void State_is_addressable_per_parameter(string optim, bool fused)
    {
        var toy = new LowRankToy(6);
        using var opt = LowRankOptimizers.Create(new TrainingOptions { Optim = optim }, toy.Trainable() with { FixedParameterSet = fused });
        Assert.Empty(opt.StateOf(LowRankToy.LinB));
        toy.Train(opt, 0, 2);
        foreach (var (name, p) in toy.Parameters)
        {
            var state = opt.StateOf(name);
            var isA = name.Contains("_A");
            if ((optim is "lorafa" or "lorapro") && isA) { Assert.Empty(state); continue; }
            long[] shape = optim == "lorapro" && name == LowRankToy.LinB ? [7, 6] : optim == "lorapro" && name == LowRankToy.EmbB ? [6, 10] : p.shape;
            Assert.Equal(shape, state["exp_avg"].shape);
            Assert.Equal(shape, state["exp_avg_sq"].shape);
            Assert.True(state["exp_avg_sq"].sum().item<float>() > 0, $"{name}: no second moment");
        }
    }
}
