using PeftSharp.Training;

namespace PeftSharp.Tests.Training.Optimizers;

internal static class Resume
{
    /// <summary>Six steps straight, and three steps, saved, loaded into a new optimizer over copies, three more: the same parameters.</summary>
    public static void Check(string optim, bool fused = true)
    {
        var options = new TrainingOptions { Optim = optim, LearningRate = 1e-2, LoraplusLrRatio = 4, LoraplusLrEmbedding = 1e-3, WeightDecay = 0.05 };
        var straight = new LowRankToy(3);
        var halves = straight.Clone();
        using (var opt = LowRankOptimizers.Create(options, straight.Trainable() with { FixedParameterSet = fused })) straight.Train(opt, 0, 6);

        var path = Path.Combine(IO.SafetensorsTests.TempDir(), $"{optim}-{fused}.safetensors");
        using (var opt = LowRankOptimizers.Create(options, halves.Trainable() with { FixedParameterSet = fused }))
        {
            halves.Train(opt, 0, 3);
            opt.Save(path);
        }
        var resumed = halves.Clone();
        using (var opt = LowRankOptimizers.Create(options, resumed.Trainable() with { FixedParameterSet = fused }))
        {
            opt.Load(path);
            resumed.Train(opt, 3, 6);
        }
        var start = new LowRankToy(3);
        foreach (var (name, p) in straight.Parameters)
        {
            Assert.True(Numerics.MaxAbsDiff(start[name], p) > 1e-4 || (optim == "lorafa" && name.Contains("_A")), $"{name} did not move");
            Numerics.Close(p, resumed[name], 1e-7, $"{optim}: {name}");
        }
    }
}
