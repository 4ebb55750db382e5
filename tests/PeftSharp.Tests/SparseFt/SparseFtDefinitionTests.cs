using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tuners.SparseFt;
using static TorchSharp.torch;
using static PeftSharp.Tests.SparseFt.SparseFtRig;

namespace PeftSharp.Tests.SparseFt;

/// <summary>The defining properties of sparse fine-tuning: the budget, the untouched entries, and what each method selects.</summary>
[Collection(SerialRng.Name)]
public class SparseFtDefinitionTests
{
    [Fact]
    public void The_budget_is_the_ceiling_of_density_times_numel()
    {
        Assert.Equal(7, SparseWeightDelta.Budget(0.07, 100));   // 0.07 * 100 is 7.000000000000001 in doubles
        Assert.Equal(41, SparseWeightDelta.Budget(0.01, 4096));
        Assert.Equal(1, SparseWeightDelta.Budget(1e-9, 4096));
        Assert.Equal(10, SparseWeightDelta.Budget(1, 10));
    }

    [Theory]
    [InlineData("random-mask")]
    [InlineData("magnitude")]
    [InlineData("spiel")]
    [InlineData("lt-sft")]
    [InlineData("lift")]
    public void After_training_only_the_budget_of_entries_differs_from_the_base(string method)
    {
        using var scope = NewDisposeScope();
        var c = Config(method) with { ReselectionSteps = 3, TotalSteps = 8, Spiel = new() { SelectionAccumulationSteps = 1, InitialReselectionRate = 0.5 },
            LtSft = new() { Phase1Steps = 4 }, Lift = new() { Rank = 2 } };
        var pm = Create(c);
        var before = pm.Base.named_parameters().ToDictionary(p => p.name, p => p.parameter.detach().clone());
        var result = Train(pm, Options(8));
        Assert.Equal(8, result.GlobalStep);
        pm.MergeAdapter();
        var targets = SparseFtTuner.Targets(pm, "default");
        Assert.Equal(6, targets.Count);
        foreach (var t in targets)
        {
            var name = t.Path + ".base_layer.weight";
            var budget = SparseWeightDelta.Budget(0.05, t.Weight.numel());
            Assert.Equal(budget, t.Delta.K);
            Assert.Equal(budget, Set(t.Delta.Indices).Count);
            var changed = t.Weight.detach().ne(before[name]).flatten();
            Assert.InRange(changed.sum().item<long>(), 1, budget);
            var outside = ones(t.Weight.numel(), dtype: ScalarType.Bool).index_fill_(0, t.Delta.Indices, false);
            Assert.True(Numerics.Same(t.Weight.detach().flatten().masked_select(outside), before[name].flatten().masked_select(outside)), $"{method}: {name} outside the support");
        }
        var targetNames = targets.Select(t => t.Path + ".base_layer.weight").ToHashSet();
        foreach (var (n, p) in pm.Base.named_parameters().Where(p => !targetNames.Contains(p.name) && !p.name.Contains("sparse_ft")))
            Assert.True(Numerics.Same(before[n], p.detach()), $"{method}: '{n}' is no target and changed");
    }

    [Fact]
    public void Gradients_and_optimizer_state_exist_for_the_active_entries_only()
    {
        using var scope = NewDisposeScope();
        var pm = Create(Config("random-mask"));
        var targets = SparseFtTuner.Targets(pm, "default");
        var trainable = pm.TrainableParameters();
        Assert.Equal(targets.Sum(t => t.Delta.K), trainable.Sum(p => p.P.numel()));
        var stepper = new Stepper(pm);
        stepper.Step();
        Assert.Equal(2 * 4 * targets.Sum(t => t.Delta.K), stepper.Optimizer.StateBytes);
        Assert.All(targets, t => Assert.Null(t.Weight.grad));
    }

    [Fact]
    public void A_composed_pair_equals_the_base_plus_both_deltas()
    {
        using var scope = NewDisposeScope();
        var a = Config("random-mask", "q_proj", "v_proj") with { RandomSeed = 1, InitWeights = false, Density = 0.2 };
        var b = Config("random-mask", "v_proj", "up_proj") with { RandomSeed = 2, InitWeights = false, Density = 0.2 };
        var pm = Create(a);
        pm.AddAdapter("b", b);
        pm.SetAdapter("default", "b");
        // The same sum written with plain ops on a fresh model: W += scatter(idx_a, v_a) + scatter(idx_b, v_b).
        var plain = TinyLlama();
        var weights = plain.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        using (no_grad())
            foreach (var (path, layer) in pm.TunerLayers())
                foreach (var adapter in layer.AdapterNames)
                {
                    var d = ((SparseFtLayer)layer).Delta(adapter);
                    weights[path + ".weight"].view(-1).index_put_(weights[path + ".weight"].view(-1).index_select(0, d.Indices) + d.Values, d.Indices);
                }
        var ids = Tuners.TrainingLoop.Batch(seed: 3);
        using (no_grad())
        {
            var composed = pm.Forward(ModelInputs.Ids(ids));
            Numerics.Close(plain.Forward(ModelInputs.Ids(ids)), composed, 1e-5, "composed");
            Assert.True(Numerics.MaxAbsDiff(composed, TinyLlama().Forward(ModelInputs.Ids(ids))) > 1e-3, "the deltas must matter");
            pm.MergeAdapter();
            Numerics.Close(composed, pm.Forward(ModelInputs.Ids(ids)), 1e-5, "merged");
        }
    }

    [Fact]
    public void Lt_sft_phase2_trains_exactly_the_top_k_of_phase1s_change_from_the_base()
    {
        using var scope = NewDisposeScope();
        var c = Config("lt-sft") with { LtSft = new() { Phase1Steps = 3 }, TotalSteps = 6 };
        var pm = Create(c);
        var stepper = new Stepper(pm);
        var targets = SparseFtTuner.Targets(pm, "default");
        List<Tensor> phase1Change = [];
        for (int s = 1; s <= 3; s++) stepper.Step(step => { if (step == 3) phase1Change = targets.Select(t => t.Delta.Dense!.detach().clone()).ToList(); });
        for (int i = 0; i < targets.Count; i++)
        {
            var d = targets[i].Delta;
            Assert.Null(d.Dense);
            var topK = phase1Change[i].abs().flatten().topk((int)d.K).indexes;
            Assert.Equal(Set(topK), Set(d.Indices));
            Assert.Equal(0, d.Values.detach().abs().sum().item<float>());   // phase 2 starts from the base
        }
        var masks = targets.Select(t => Set(t.Delta.Indices)).ToList();
        for (int s = 4; s <= 6; s++) stepper.Step();
        for (int i = 0; i < targets.Count; i++)
        {
            var dense = targets[i].Delta.ToDense().flatten();
            Assert.Equal(masks[i], Set(targets[i].Delta.Indices));
            var touched = nonzero(dense).flatten().data<long>().ToHashSet();
            Assert.True(touched.Count > 0 && touched.IsSubsetOf(masks[i]));
        }
    }

    [Fact]
    public void Lifts_mask_is_the_top_k_of_the_rank_r_approximation_and_is_refreshed_from_the_current_weight()
    {
        using var scope = NewDisposeScope();
        var c = Config("lift") with { Lift = new() { Rank = 2 }, ReselectionSteps = 2, TotalSteps = 10 };
        var pm = Create(c);
        var targets = SparseFtTuner.Targets(pm, "default");
        static HashSet<long> PrincipalTopK(Tensor w, long k)
        {
            var (u, s, vh) = linalg.svd(w, fullMatrices: false);
            var approx = u[.., ..2].matmul(diag(s[..2])).matmul(vh[..2, ..]);
            return Set(approx.abs().flatten().topk((int)k).indexes);
        }
        foreach (var t in targets) Assert.Equal(PrincipalTopK(t.Weight.detach(), t.Delta.K), Set(t.Delta.Indices));
        var stepper = new Stepper(pm);
        List<Tensor> current = [];
        stepper.Step();
        stepper.Step(step => current = targets.Select(t => t.Weight.detach() + t.Delta.ToDense()).ToList());
        bool anyMoved = false;
        for (int i = 0; i < targets.Count; i++)
        {
            var expected = PrincipalTopK(current[i], targets[i].Delta.K);
            Assert.Equal(expected, Set(targets[i].Delta.Indices));
            anyMoved |= !expected.SetEquals(PrincipalTopK(targets[i].Weight.detach(), targets[i].Delta.K));
        }
        Assert.True(anyMoved, "two steps at this rate must move some principal weights for the refresh to be tested");
    }

    [Fact]
    public void A_resumed_spiel_run_ends_where_the_straight_run_ends()
    {
        using var scope = NewDisposeScope();
        var dir = IO.SafetensorsTests.TempDir();
        // SftAdamW (optim auto); the checkpoint after step 5 falls inside the window 4..6 whose sums the regrowth after 6 reads.
        var c = Config("spiel") with { ReselectionSteps = 4, TotalSteps = 10, Spiel = new() { SelectionAccumulationSteps = 2, InitialReselectionRate = 0.5 } };
        var straight = Create(c);
        Train(straight, Options(10, Path.Combine(dir, "straight")) with { SaveSteps = 5, Optim = "auto" });
        var resumed = Create(c);
        Train(resumed, Options(10, Path.Combine(dir, "resumed")) with { Optim = "auto", ResumeFromCheckpoint = Path.Combine(dir, "straight", "checkpoint-5") });
        var a = SparseFtTuner.Targets(straight, "default");
        var b = SparseFtTuner.Targets(resumed, "default");
        var initial = SparseFtTuner.Targets(Create(c), "default");
        Assert.Contains(a.Zip(initial), x => !Set(x.First.Delta.Indices).SetEquals(Set(x.Second.Delta.Indices)));   // regrowth happened
        foreach (var (x, y) in a.Zip(b))
        {
            Assert.True(Numerics.Same(x.Delta.Indices, y.Delta.Indices), x.Path);
            Assert.True(Numerics.Same(x.Delta.Values.detach(), y.Delta.Values.detach()), x.Path);
        }
    }
}
