using PeftSharp.Generation;
using PeftSharp.Generation.Composition;
using PeftSharp.Models;
using PeftSharp.Peft;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Combining;

/// <summary>
/// Dynamic logit fusion (Fan et al. 2024): a "large" model (tinycode-3m with one random LoRA) steered by small experts
/// (tinycode-3m with other random LoRAs, against tinycode-3m itself as the small base).
/// </summary>
public class DynamicFusionTests
{
    static readonly PeftModel Large = LogitMixTests.RandomLora(seed: 9);
    static readonly PeftModel Experts = TwoExperts();
    static readonly AdaptersOff SmallBase = new(Experts);

    // An explicit static constructor runs before xunit builds the instance, so the models never load inside a test's
    // dispose scope (which would free their weights when that test ends).
    static DynamicFusionTests() { }

    // one small model holding two random LoRAs, "a" and "b"
    static PeftModel TwoExperts()
    {
        var pm = LogitMixTests.RandomLora(seed: 5);
        var other = LogitMixTests.RandomLora(seed: 6);
        var dir = Path.Combine(Path.GetTempPath(), "peftsharp-tests", "fusion-" + Guid.NewGuid().ToString("N"));
        pm.Save(Path.Combine(dir, "a"));
        other.Save(Path.Combine(dir, "b"));
        var two = PeftModel.FromPretrained(AutoModel.Load(Repo.Path("models", "tinycode-3m")), Path.Combine(dir, "a"), "a");
        two.LoadAdapter(Path.Combine(dir, "b"), "b");
        return two;
    }

    static AdapterView Expert(string name) => new(Experts, name);

    static Tensor Ids() => randint(2, 4096, [2, 6], dtype: ScalarType.Int64, generator: new Generator(21));

    static Tensor Logits(ILanguageModel m, Tensor ids)
    {
        using var _ = no_grad();
        return m.Forward(ModelInputs.Ids(ids)).to(ScalarType.Float32);
    }

    static double MaxDiff(Tensor a, Tensor b) => (a - b).abs().max().to(ScalarType.Float64).item<double>();

    [Theory]
    [InlineData(FusionSearch.OneExpert, 0.1)]
    [InlineData(FusionSearch.Joint, 0.25)]
    public void The_weights_minimise_the_papers_objective_on_recorded_logits(FusionSearch search, double step)
    {
        using var scope = NewDisposeScope();
        var ids = Ids();
        var (large, small, a, b) = (Logits(Large, ids), Logits(SmallBase, ids), Logits(Expert("a"), ids), Logits(Expert("b"), ids));
        var grid = new FusionGrid(0, 2, step, search);
        var (weights, objective) = FusionWeights.Solve(large, small, [a, b], grid);
        Assert.Equal(new long[] { 2, 6, 2 }, weights.shape);

        var candidates = grid.Candidates(2);
        Assert.Equal(search == FusionSearch.OneExpert ? 2 * 21 : 9 * 9, candidates.Count);
        var rows = new[] { large, small, a, b }.Select(t => t.to(ScalarType.Float64).reshape(-1, t.shape[^1])).ToArray();
        int distinct = 0;
        for (int n = 0; n < 12; n++)
        {
            var (l, s, ea, eb) = (Row(rows[0], n), Row(rows[1], n), Row(rows[2], n), Row(rows[3], n));
            // Algorithm 1 written out in doubles: the first candidate with the least objective wins.
            double best = double.PositiveInfinity;
            double[] argmin = [];
            foreach (var c in candidates)
            {
                double o = ObjectiveByHand(l, s, [ea, eb], c);
                if (o < best) (best, argmin) = (o, c);
            }
            var got = new[] { weights[n / 6, n % 6, 0].item<double>(), weights[n / 6, n % 6, 1].item<double>() };
            Assert.Equal(argmin, got);
            Assert.Equal(best, objective[n / 6, n % 6].item<double>(), 1e-9);
            if (argmin.Any(x => x != 0)) distinct++;
        }
        Assert.True(distinct > 0, "every position chose the large model alone: the test would not see a wrong expert weight");
    }

    static double[] Row(Tensor rows, int n) => rows[n].data<double>().ToArray();

    // sum_t (KL(P~||P) - KL(Q_t||Q))^2 + (KL(P||P~) - KL(Q||Q_t))^2 with P~ = softmax(M_L + sum_t w_t (M_t - M_S))
    static double ObjectiveByHand(double[] large, double[] small, double[][] experts, double[] w)
    {
        var fused = large.Select((x, v) => x + experts.Select((e, t) => w[t] * (e[v] - small[v])).Sum()).ToArray();
        double klFusedLarge = Kl(fused, large), klLargeFused = Kl(large, fused);
        return experts.Sum(e => Math.Pow(klFusedLarge - Kl(e, small), 2) + Math.Pow(klLargeFused - Kl(small, e), 2));
    }

    static double Kl(double[] logitsP, double[] logitsQ)
    {
        double[] lp = LogSoftmax(logitsP), lq = LogSoftmax(logitsQ);
        return lp.Select((x, v) => Math.Exp(x) * (x - lq[v])).Sum();
    }

    static double[] LogSoftmax(double[] z)
    {
        double max = z.Max(), lse = max + Math.Log(z.Sum(x => Math.Exp(x - max)));
        return z.Select(x => x - lse).ToArray();
    }

    [Fact]
    public void An_expert_equal_to_the_small_base_leaves_the_large_model()
    {
        using var scope = NewDisposeScope();
        var ids = Ids();
        var fusion = new DynamicLogitFusion(Large, SmallBase, [SmallBase]);
        Tensor? chosen = null;
        fusion.Observer = w => chosen = w.clone().MoveToOuterDisposeScope();
        Assert.Equal(0, MaxDiff(Logits(fusion, ids), Logits(Large, ids)));
        Assert.Equal(0, chosen!.abs().max().item<double>());
    }

    [Fact]
    public void With_the_large_model_equal_to_the_small_base_one_expert_is_copied()
    {
        // P = Q, so a = 1 gives P~ = Q_t: both KL terms match exactly, and no other grid value does.
        using var scope = NewDisposeScope();
        var ids = Ids();
        var fusion = new DynamicLogitFusion(SmallBase, SmallBase, [Expert("a")]);
        Tensor? chosen = null;
        fusion.Observer = w => chosen = w.clone().MoveToOuterDisposeScope();
        var fused = Logits(fusion, ids);
        Assert.True(chosen!.eq(1.0).all().item<bool>(), $"weights {chosen.min().item<double>()}..{chosen.max().item<double>()}, expected 1 everywhere");
        Assert.True(MaxDiff(fused.log_softmax(-1), Logits(Expert("a"), ids).log_softmax(-1)) < 1e-5);
    }

    [Fact]
    public void The_scores_are_the_large_logits_plus_the_weighted_expert_differences()
    {
        using var scope = NewDisposeScope();
        var ids = Ids();
        var fusion = new DynamicLogitFusion(Large, SmallBase, [Expert("a"), Expert("b")]);
        Tensor? w = null;
        fusion.Observer = x => w = x.to(ScalarType.Float32).MoveToOuterDisposeScope();
        var fused = Logits(fusion, ids);
        var (large, small) = (Logits(Large, ids), Logits(SmallBase, ids));
        var expected = large + w![.., .., 0].unsqueeze(-1) * (Logits(Expert("a"), ids) - small) + w[.., .., 1].unsqueeze(-1) * (Logits(Expert("b"), ids) - small);
        Assert.True(MaxDiff(fused, expected) < 1e-5);
        Assert.True(MaxDiff(fused, large) > 1e-3, "the experts must move the large model somewhere");
    }

    [Fact]
    public void Cached_generation_gives_the_tokens_of_full_recomputation() =>
        LogitMixTests.AssertCachedGenerationRecomputes(new DynamicLogitFusion(Large, SmallBase, [Expert("a"), Expert("b")]), Large);

    [Fact]
    public void An_adapter_view_runs_its_adapter_and_restores_the_active_set()
    {
        using var scope = NewDisposeScope();
        var ids = Ids();
        Experts.SetAdapter("b");
        var viaView = Logits(Expert("a"), ids);
        Assert.Equal(["b"], Experts.ActiveAdapters);
        Experts.SetAdapter("a");
        Assert.Equal(0, MaxDiff(viaView, Logits(Experts, ids)));
        Assert.True(MaxDiff(viaView, Logits(Expert("b"), ids)) > 1e-3);
        Assert.Throws<KeyNotFoundException>(() => new AdapterView(Experts, "c"));
    }

    [Theory]
    [InlineData(0, 2, 0, "STEP > 0")]
    [InlineData(1, 0, 0.1, "MIN <= MAX")]
    [InlineData(0, 1e6, 1e-3, "coarser step")]
    public void A_bad_grid_is_refused(double min, double max, double step, string says)
    {
        var e = Assert.Throws<ArgumentException>(() => new DynamicLogitFusion(Large, SmallBase, [Expert("a")], new FusionGrid(min, max, step)));
        Assert.Contains(says, e.Message);
    }

    [Fact]
    public void A_joint_search_too_large_to_run_is_refused()
    {
        var e = Assert.Throws<ArgumentException>(() => new FusionGrid(0, 2, 0.1, FusionSearch.Joint).Candidates(4));
        Assert.Contains("one-expert search", e.Message);
        Assert.Equal(3 * 11, new FusionGrid(0, 1, 0.1).Candidates(3).Count);
        Assert.Throws<ArgumentException>(() => new DynamicLogitFusion(Large, SmallBase, []));
    }

    [Fact]
    public void Views_of_one_small_model_run_as_one_batch_with_the_numbers_of_separate_runs()
    {
        using var scope = NewDisposeScope();
        var ids = Ids();
        var fusion = new DynamicLogitFusion(Large, SmallBase, [Expert("a"), Expert("b")]);
        Assert.Equal(2, fusion.Forwards);   // the large model, then base + a + b as one batch of 3B rows
        var batched = Logits(fusion, ids);
        Experts.Base.train();   // rows cannot mix while training: each view runs alone
        try
        {
            var apart = new DynamicLogitFusion(Large, SmallBase, [Expert("a"), Expert("b")]);
            Assert.Equal(4, apart.Forwards);
            Assert.True(MaxDiff(batched, Logits(apart, ids)) < 1e-4);
        }
        finally { Experts.Base.eval(); }
        Assert.Equal(2, LogitMix.ProxyTuning(Large, Experts, SmallBase).Forwards);
    }
}
