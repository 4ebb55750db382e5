using PeftSharp.Models;
using PeftSharp.Tuners;
using PeftSharp.Tuners.SparseFt;
using PeftSharp.Tuners.SparseFt.Sara;
using static TorchSharp.torch;
using static PeftSharp.Tests.SparseFt.SparseFtRig;

namespace PeftSharp.Tests.SparseFt;

/// <summary>SaRA: the smallest-|W| mask at the budget, the nuclear-norm term, and the progressive freeze.</summary>
[Collection(SerialRng.Name)]
public class SaraTests
{
    static SparseFtConfig Config(double density = 0.05) => new()
    {
        Method = "sara", Density = density, TargetModules = ModuleSelector.Of("q_proj", "v_proj", "down_proj"),
    };

    [Fact]
    public void The_mask_is_the_smallest_magnitude_entries_exactly_at_the_budget()
    {
        using var scope = NewDisposeScope();
        var pm = Create(Config(0.07));
        var targets = SparseFtTuner.Targets(pm, "default");
        Assert.Equal(6, targets.Count);
        foreach (var t in targets)
        {
            var w = t.Weight.detach().flatten().abs();
            long k = (long)Math.Ceiling(0.07m * w.shape[0]);
            Assert.Equal(k, t.Delta.K);
            var inside = ones(w.shape[0], dtype: ScalarType.Bool).index_fill_(0, t.Delta.Indices, false).logical_not();
            Assert.Equal(k, inside.sum().item<long>());
            // Every entry in the mask is smaller than every entry left out.
            Assert.True(w.masked_select(inside).max().item<float>() < w.masked_select(inside.logical_not()).min().item<float>(), t.Path);
        }
    }

    [Fact]
    public void The_penalty_is_lambda_times_the_sum_of_singular_values_and_its_gradient_reaches_the_values()
    {
        using var scope = NewDisposeScope();
        var c = Config() with { InitWeights = false, Sara = new() { RankPenalty = 0.3, ProgressiveSteps = -1 } };
        var pm = Create(c);
        var targets = SparseFtTuner.Targets(pm, "default");
        var schedule = (SaraSchedule)new SaraMethod().Schedule(targets, c)!;
        var d = schedule.Penalised.Delta;
        Assert.Same(targets[0].Delta, d);
        var penalty = schedule.ExtraLoss()!;
        // ‖P‖_* written out: the square roots of the eigenvalues of PᵀP, summed.
        var p = zeros(d.Numel).index_put_(d.Values.detach(), d.Indices).view(d.Shape).to(ScalarType.Float64);
        var nuclear = linalg.eigvalsh(p.t().matmul(p)).clamp_min(0).sqrt().sum().item<double>();
        Assert.Equal(0.3 * nuclear, penalty.item<float>(), 1e-4 * nuclear);
        penalty.backward();
        // d‖P‖_*/dP = U Vᵀ (singular values distinct): its entries on the support are the values' gradient.
        var (u, _, vh) = linalg.svd(p, fullMatrices: false);
        var expected = (0.3 * u.matmul(vh)).flatten().index_select(0, d.Indices).to(ScalarType.Float32);
        Numerics.Close(expected, d.Values.grad!, 1e-4, "gradient of the penalty");
    }

    [Fact]
    public void After_the_progressive_step_entries_past_the_threshold_keep_their_values_and_the_rest_train_on()
    {
        using var scope = NewDisposeScope();
        var c = Config() with { Sara = new() { RankPenalty = 1e-3, ProgressiveSteps = 3 } };
        var pm = Create(c);
        var stepper = new Stepper(pm, lr: 5e-2);
        for (int s = 0; s < 3; s++) stepper.Step();
        var targets = SparseFtTuner.Targets(pm, "default");
        var before = targets.Select(t => t.Delta.Values.detach().clone()).ToList();
        var indices = targets.Select(t => t.Delta.Indices.clone()).ToList();
        for (int s = 0; s < 3; s++) stepper.Step();
        long frozenTotal = 0, movedTotal = 0;
        for (int i = 0; i < targets.Count; i++)
        {
            var t = targets[i];
            var w = t.Weight.detach().flatten().abs();
            var outside = ones(w.shape[0], dtype: ScalarType.Bool).index_fill_(0, indices[i], false);
            var theta = w.masked_select(outside).min();
            var atStep3 = (t.Weight.detach().flatten().index_select(0, indices[i]) + before[i]).abs();
            var frozen = atStep3.ge(theta);
            var now = t.Delta.Values.detach();
            Assert.True(Numerics.Same(indices[i], t.Delta.Indices), "SaRA never moves its support");
            Assert.True(Numerics.Same(before[i].masked_select(frozen), now.masked_select(frozen)), $"{t.Path}: a frozen entry moved");
            frozenTotal += frozen.sum().item<long>();
            movedTotal += now.ne(before[i]).logical_and(frozen.logical_not()).sum().item<long>();
        }
        Assert.True(frozenTotal > 0, "three steps at this rate must push some entries past θ for the test to mean anything");
        Assert.True(movedTotal > 0, "the entries still under θ must train on");
    }

    [Fact]
    public void A_run_resumed_after_the_progressive_step_ends_where_the_straight_run_ends()
    {
        using var scope = NewDisposeScope();
        var dir = IO.SafetensorsTests.TempDir();
        var c = Config() with { Sara = new() { RankPenalty = 1e-3, ProgressiveSteps = 3 } };
        var o = Options(10) with { LearningRate = 5e-2 };
        var straight = Create(c);
        Train(straight, o with { OutputDir = Path.Combine(dir, "straight"), SaveSteps = 6 });
        var resumed = Create(c);
        Train(resumed, o with { OutputDir = Path.Combine(dir, "resumed"), ResumeFromCheckpoint = Path.Combine(dir, "straight", "checkpoint-6") });
        foreach (var (x, y) in SparseFtTuner.Targets(straight, "default").Zip(SparseFtTuner.Targets(resumed, "default")))
            Assert.True(Numerics.Same(x.Delta.Values.detach(), y.Delta.Values.detach()), x.Path);
    }
}
