using PeftSharp.Models;
using PeftSharp.Tuners;
using PeftSharp.Tuners.SparseFt;
using static TorchSharp.torch;
using static PeftSharp.Tests.SparseFt.SparseFtRig;

namespace PeftSharp.Tests.SparseFt;

/// <summary>S²FT: whole rows and columns of the chosen heads and channels, coupled within each layer, at the budget.</summary>
[Collection(SerialRng.Name)]
public class S2ftTests
{
    // tiny-llama: 4 query heads in 2 key/value groups of head_dim 16, hidden 64, intermediate 128, 2 layers.
    static SparseFtConfig Config(double density = 0.5) => new() { Method = "s2ft", Density = density, RandomSeed = 5, TargetModules = ModuleSelector.Of("all-linear") };

    static SortedSet<long> Rows(SparseTarget t) => new(t.Delta.Indices.div(t.Layer.InFeatures, RoundingMode.floor).unique().Item1.data<long>().ToArray());
    static SortedSet<long> Columns(SparseTarget t) => new(t.Delta.Indices.remainder(t.Layer.InFeatures).unique().Item1.data<long>().ToArray());
    static SortedSet<long> Heads(SortedSet<long> rows) => new(rows.Select(r => r / 16));

    [Fact]
    public void Heads_and_channels_are_coupled_across_the_layers_projections_and_fill_whole_rows_and_columns()
    {
        using var scope = NewDisposeScope();
        var pm = Create(Config());
        var targets = SparseFtTuner.Targets(pm, "default").ToDictionary(t => t.Path);
        Assert.Equal(14, targets.Count);
        var channelSets = new List<SortedSet<long>>();
        for (int layer = 0; layer < 2; layer++)
        {
            SparseTarget T(string p) => targets.Single(x => x.Key.EndsWith($"layers.{layer}.{p}")).Value;
            var qHeads = Heads(Rows(T("self_attn.q_proj")));
            var kvHeads = Heads(Rows(T("self_attn.k_proj")));
            Assert.Single(kvHeads);                                            // ⌊0.5 · 2⌋ groups
            Assert.Equal(kvHeads, Heads(Rows(T("self_attn.v_proj"))));
            Assert.Equal(new SortedSet<long>(kvHeads.SelectMany(g => new[] { 2 * g, 2 * g + 1 })), qHeads);   // the group's query heads
            Assert.Equal(qHeads, Heads(Columns(T("self_attn.o_proj"))));
            var channels = Rows(T("mlp.up_proj"));
            Assert.Equal(64, channels.Count);                                  // ⌊0.5 · 128⌋
            Assert.Equal(channels, Rows(T("mlp.gate_proj")));
            Assert.Equal(channels, Columns(T("mlp.down_proj")));
            channelSets.Add(channels);
        }
        Assert.NotEqual(channelSets[0], channelSets[1]);                       // each layer draws its own
        foreach (var t in targets.Values)
        {
            bool rows = !t.Path.EndsWith("o_proj") && !t.Path.EndsWith("down_proj");
            long units = rows ? Rows(t).Count : Columns(t).Count;
            Assert.Equal(units * (rows ? t.Layer.InFeatures : t.Layer.OutFeatures), t.Delta.K);          // whole rows / columns
            Assert.Equal(t.Weight.numel() / 2, t.Delta.K);                                               // half the units at density 0.5
            Assert.True(t.Delta.K <= SparseWeightDelta.Budget(0.5, t.Weight.numel()));
        }
    }

    [Fact]
    public void A_density_that_selects_no_head_is_refused_by_name()
    {
        var e = Assert.Throws<ArgumentException>(() => Create(Config(0.3)));
        Assert.Contains("density 0.3", e.Message);
        Assert.Contains("1/2", e.Message);
    }

    [Fact]
    public void Training_changes_only_the_selected_rows_and_columns_and_the_slice_forward_is_the_scatter_forward()
    {
        using var scope = NewDisposeScope();
        var pm = Create(Config() with { InitWeights = false });
        var targets = SparseFtTuner.Targets(pm, "default");
        var ids = Tuners.TrainingLoop.Batch(seed: 3);
        // The scatter forward (no slices) against the slice forward the training hooks install, in value and gradient.
        var plain = pm.Forward(ModelInputs.Ids(ids));
        plain.pow(2).mean().backward();
        var plainGrads = targets.Select(t => t.Delta.Values.grad!.clone()).ToList();
        foreach (var t in targets) t.Delta.Values.grad!.zero_();
        var stepper = new Stepper(pm);
        Assert.All(targets, t => Assert.NotNull(t.Delta.Slice));
        pm.Base.eval();
        var sliced = pm.Forward(ModelInputs.Ids(ids));
        Numerics.Close(plain, sliced, 1e-5, "slice forward");
        sliced.pow(2).mean().backward();
        for (int i = 0; i < targets.Count; i++) Numerics.Close(plainGrads[i], targets[i].Delta.Values.grad!, 1e-5, targets[i].Path);
        foreach (var t in targets) t.Delta.Values.grad!.zero_();

        var before = targets.Select(t => t.Weight.detach().clone()).ToList();
        var supports = targets.Select(t => t.Delta.Indices.clone()).ToList();
        for (int s = 0; s < 3; s++) stepper.Step();
        pm.MergeAdapter();
        for (int i = 0; i < targets.Count; i++)
        {
            var changed = nonzero(targets[i].Weight.detach().ne(before[i]).flatten()).flatten();
            Assert.True(changed.shape[0] > 0, targets[i].Path);
            Assert.Subset(Set(supports[i]), Set(changed));
        }
    }
}
