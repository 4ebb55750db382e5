using System.Text.Json;
using PeftSharp.Training;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Training;

public class ScheduleAndClipTests
{
    public static TheoryData<string> FixtureRuns => new() { "llama-lora-qv", "llama-lora-all-accum-clip" };

    internal sealed record TraceConfig(int BatchSize, int Epochs, int GradAccum, double Lr, double MaxGradNorm, int NumSequences, int SeqLen,
        int WarmupSteps, double WeightDecay);

    internal static (TraceConfig Config, double[] Lrs, double[] Losses) Trace(string run)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Repo.Fixture("training", run, "trace.json")));
        var root = doc.RootElement;
        var config = root.GetProperty("config").Deserialize<TraceConfig>(new JsonSerializerOptions { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower })!;
        return (config, root.GetProperty("lrs").EnumerateArray().Select(x => x.GetDouble()).ToArray(),
            root.GetProperty("losses").EnumerateArray().Select(x => x.GetDouble()).ToArray());
    }

    [Theory]
    [MemberData(nameof(FixtureRuns))]
    public void Linear_schedule_equals_the_reference_lrs_exactly(string run)
    {
        var (c, lrs, _) = Trace(run);
        var total = c.Epochs * c.NumSequences / (c.BatchSize * c.GradAccum);
        Assert.Equal(lrs.Length, total);
        var s = new LrSchedule("linear", c.Lr, c.WarmupSteps, total);
        Assert.Equal(lrs, Enumerable.Range(0, total).Select(s.At));
    }

    [Fact]
    public void Cosine_and_constant_follow_transformers_formulas()
    {
        var s = new LrSchedule("cosine", 1e-3, 3, 13);
        for (var step = 0; step < 15; step++)
        {
            // transformers: progress = (step - warmup) / max(1, total - warmup); max(0, 0.5 * (1 + cos(pi * num_cycles * 2 * progress)))
            var progress = (step - 3) / 10.0;
            var expected = step < 3 ? step / 3.0 : Math.Max(0, 0.5 * (1 + Math.Cos(Math.PI * 0.5 * 2.0 * progress)));
            Assert.Equal(1e-3 * expected, s.At(step));
        }
        Assert.Equal(1e-3, s.At(3));
        Assert.Equal(0.5e-3, s.At(8), 15);
        Assert.Equal(0.0, s.At(13), 15);

        var cw = new LrSchedule("constant_with_warmup", 2.0, 4, 100);
        Assert.Equal([0.0, 0.5, 1.0, 1.5, 2.0, 2.0], Enumerable.Range(0, 6).Select(cw.At));
        Assert.Equal(2.0, new LrSchedule("constant", 2.0, 4, 100).At(0));
        Assert.Equal(3, LrSchedule.WarmupFor(null, 0.05, 41)); // ceil(2.05)
        Assert.Equal(0, LrSchedule.WarmupFor(0, 0.05, 41));    // a typed 0 is no warmup, not "use the ratio"
        Assert.Equal(7, LrSchedule.WarmupFor(7, 0.5, 41));    // explicit steps win
    }

    [Fact]
    public void Clip_returns_the_norm_before_clipping_and_scales_by_max_over_norm()
    {
        using var a = new Parameter(zeros(2));
        using var b = new Parameter(zeros(1));
        using var c = new Parameter(zeros(1));   // no gradient: ignored
        void Grads()
        {
            a.grad = tensor(new[] { 3.0f, 4.0f });
            b.grad = tensor(new[] { 12.0f });
        }
        Grads();
        var norm = GradClip.ClipGradNorm([a, b, c], 6.5);
        Assert.Equal(13.0, norm, 5);
        var coef = (float)(6.5 / (13.0 + 1e-6));
        Assert.Equal(3 * coef, a.grad!.data<float>()[0], 6);
        Assert.Equal(12 * coef, b.grad!.data<float>()[0], 5);

        Grads();
        Assert.Equal(13.0, GradClip.ClipGradNorm([a, b], 1e9), 5);
        Assert.Equal(4.0f, a.grad!.data<float>()[1]);                   // coefficient clamped to 1

        Grads();
        Assert.Equal(12.0, GradClip.ClipGradNorm([a, b], 1e9, double.PositiveInfinity), 6);
    }
}
