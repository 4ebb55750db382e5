using PeftSharp.Generation;
using PeftSharp.Generation.Composition;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Combining;

/// <summary>Proxy-tuning and EFT: tinycode-3m is the "large" model, tinycode-3m with a random LoRA the small pair.</summary>
public class LogitMixTests
{
    static readonly PretrainedModel Large = AutoModel.Load(Repo.Path("models", "tinycode-3m"));
    static readonly PeftModel Small = RandomLora();

    // An explicit static constructor runs before xunit builds the instance, so the models never load inside a test's
    // dispose scope (which would free their weights when that test ends).
    static LogitMixTests() { }

    internal static PeftModel RandomLora(ulong seed = 5)
    {
        var pm = PeftModel.Create(AutoModel.Load(Repo.Path("models", "tinycode-3m")), new LoraConfig { R = 4, LoraAlpha = 16, TargetModules = ["all-linear"] });
        var gen = new Generator(seed);
        using (no_grad())
            foreach (var (name, p) in pm.TrainableParameters())
                if (name.Contains("lora_B")) p.copy_(randn(p.shape, generator: gen) * 0.2);
        return pm;
    }

    static Tensor Ids() => randint(2, 4096, [2, 9], dtype: ScalarType.Int64, generator: new Generator(11));

    static Tensor Logits(ILanguageModel m, Tensor ids)
    {
        using var _ = no_grad();
        return m.Forward(ModelInputs.Ids(ids)).to(ScalarType.Float32);
    }

    static Tensor SmallBase(Tensor ids)
    {
        using var off = Small.DisableAdapters();
        return Logits(Small, ids);
    }

    static double MaxDiff(Tensor a, Tensor b) => (a - b).abs().max().item<float>();

    [Fact]
    public void Beta_zero_gives_the_large_model()
    {
        using var scope = NewDisposeScope();
        var ids = Ids();
        var large = Logits(Large, ids);
        Assert.True(MaxDiff(large, SmallBase(ids)) == 0, "the large and small base are the same weights here");
        Assert.True(MaxDiff(large, Logits(Small, ids)) > 0.1, "the random LoRA must move the small model's logits");
        Assert.Equal(0, MaxDiff(large, Logits(LogitMix.ProxyTuning(Large, Small, new AdaptersOff(Small), beta: 0), ids)));
        Assert.Equal(0, MaxDiff(large.log_softmax(-1), Logits(LogitMix.Eft(Large, new ExpertDelta(Small, new AdaptersOff(Small), 0)), ids)));
    }

    [Fact]
    public void Identical_small_models_add_nothing()
    {
        using var scope = NewDisposeScope();
        var ids = Ids();
        var large = Logits(Large, ids);
        Assert.Equal(0, MaxDiff(large, Logits(LogitMix.ProxyTuning(Large, Small, Small, beta: 3), ids)));
        Assert.Equal(0, MaxDiff(large.log_softmax(-1), Logits(LogitMix.Eft(Large, new ExpertDelta(Small, Small, 3)), ids)));
    }

    [Theory]
    [InlineData(1.0)]
    [InlineData(0.7)]
    [InlineData(-0.5)]
    public void Proxy_and_eft_equal_their_formulas_on_recorded_logits(double beta)
    {
        using var scope = NewDisposeScope();
        var ids = Ids();
        var (large, tuned, untuned) = (Logits(Large, ids), Logits(Small, ids), SmallBase(ids));
        var proxy = Logits(LogitMix.ProxyTuning(Large, Small, new AdaptersOff(Small), beta), ids);
        var eft = Logits(LogitMix.Eft(Large, new ExpertDelta(Small, new AdaptersOff(Small), beta)), ids);
        Assert.True(MaxDiff(proxy, large + beta * (tuned - untuned)) < 1e-5);
        Assert.True(MaxDiff(eft, large.log_softmax(-1) + beta * (tuned.log_softmax(-1) - untuned.log_softmax(-1))) < 1e-5);
        // The spaces differ by a constant per position only: the same distribution for any beta, different scores.
        Assert.True(MaxDiff(proxy.log_softmax(-1), eft.log_softmax(-1)) < 1e-4);
        Assert.True(MaxDiff(proxy, eft) > 1);
    }

    [Fact]
    public void Two_deltas_each_take_their_own_beta()
    {
        using var scope = NewDisposeScope();
        var ids = Ids();
        var (large, tuned, untuned) = (Logits(Large, ids), Logits(Small, ids), SmallBase(ids));
        var mix = LogitMix.Eft(Large, new ExpertDelta(Small, new AdaptersOff(Small), 0.5), new ExpertDelta(new AdaptersOff(Small), Small, 2));
        var expected = large.log_softmax(-1) - 1.5 * (tuned.log_softmax(-1) - untuned.log_softmax(-1));
        Assert.True(MaxDiff(Logits(mix, ids), expected) < 1e-5);
    }

    [Fact]
    public void Cached_generation_gives_the_tokens_of_full_recomputation() =>
        AssertCachedGenerationRecomputes(LogitMix.ProxyTuning(Large, Small, new AdaptersOff(Small), beta: 1.5), Large);

    /// <summary>
    /// Greedy generation with the composed cache equals re-running the whole sequence at every step, and differs from
    /// <paramref name="large"/> alone (so the small models' caches are exercised).
    /// </summary>
    internal static void AssertCachedGenerationRecomputes(ILanguageModel composed, ILanguageModel large, int steps = 10)
    {
        int[][] prompts = [[0, 17, 230, 5, 99], [0, 41]];
        var options = new GenerationOptions { MaxNewTokens = steps, PadTokenId = 1 };
        var cached = TextGenerator.Generate(composed, prompts, options);
        for (int i = 0; i < prompts.Length; i++)
        {
            var seq = prompts[i].ToList();
            for (int step = 0; step < steps; step++)
            {
                using var scope = NewDisposeScope();
                var scores = Logits(composed, tensor(seq.Select(x => (long)x).ToArray()).view(1, -1));
                seq.Add((int)scores[0, -1].argmax().item<long>());
            }
            Assert.Equal(seq, cached[i]);
        }
        Assert.NotEqual(TextGenerator.Generate(large, prompts, options), cached);
    }

    [Fact]
    public void Models_with_different_vocabularies_are_refused()
    {
        var other = AutoModel.Load(Repo.Fixture("models", "tiny-llama"));
        var e = Assert.Throws<ArgumentException>(() => LogitMix.ProxyTuning(Large, other, other));
        Assert.Contains("4096", e.Message);
        Assert.Contains("512", e.Message);
    }
}
