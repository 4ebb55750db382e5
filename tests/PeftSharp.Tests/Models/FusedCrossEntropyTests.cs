using PeftSharp.Data;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Training;
using PeftSharp.Tuners.Lora;
using PeftSharp.Tuners.PromptTuning;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Models;

/// <summary>The chunked head + cross-entropy against the plain path: logits, <see cref="Losses.CausalLM(Tensor, Tensor)"/>, backward.</summary>
public class FusedCrossEntropyTests(ITestOutputHelper output)
{
    const long B = 3, T = 11, H = 16, V = 37;

    /// <summary>Random h, W, b and labels with -100s; labels[0, 6..] ignored, so that tokens 5..9 (a whole chunk of 5) count for nothing.</summary>
    static (Tensor H, Tensor W, Tensor Bias, Tensor Labels) Data(ScalarType dtype)
    {
        using var g = new Generator(11);
        var h = randn([B, T, H], generator: g).to(dtype).requires_grad_();
        var w = randn([V, H], generator: g).mul_(0.5).to(dtype).requires_grad_();
        var b = randn([V], generator: g).to(dtype).requires_grad_();
        var labels = randint(0, V, [B, T], generator: g);
        labels.masked_fill_(rand([B, T], generator: g).lt(0.2), Losses.IgnoreIndex);
        labels[0, 6..] = tensor(Losses.IgnoreIndex);
        return (h, w, b, labels);
    }

    /// <summary>The loss and the gradients of h, W and (if given) b.</summary>
    static (Tensor Loss, Tensor[] Grads) LossAndGrads(Func<Tensor> loss, params Tensor[] inputs)
    {
        foreach (var x in inputs) x.grad = null;
        var l = loss();
        l.backward();
        return (l.detach(), inputs.Select(x => x.grad!.detach().clone()).ToArray());
    }

    static double RelDiff(Tensor expected, Tensor actual) =>
        Numerics.MaxAbsDiff(expected, actual) / Math.Max(expected.abs().max().to(ScalarType.Float64).item<double>(), 1e-30);

    [Theory]
    [InlineData(5, true)]   // 33 tokens: 6 full chunks and a short one; the second chunk counts no token
    [InlineData(7, false)]
    [InlineData(1, true)]
    [InlineData(33, true)]
    [InlineData(0, false)]  // automatic: one chunk
    public void Float32_loss_and_gradients_equal_the_plain_path(long chunk, bool withBias)
    {
        using var scope = NewDisposeScope();
        var (h, w, b, labels) = Data(ScalarType.Float32);
        var bias = withBias ? b : null;
        Tensor[] inputs = withBias ? [h, w, b] : [h, w];
        var (plain, plainGrads) = LossAndGrads(() => Losses.CausalLM(nn.functional.linear(h, w, bias), labels), inputs);
        var (fused, fusedGrads) = LossAndGrads(() => Losses.CausalLMFused(h, w, bias, labels, chunk), inputs);

        Assert.Equal(ScalarType.Float32, fused.dtype);
        Assert.Empty(fused.shape);
        Assert.True(RelDiff(plain, fused) <= 1e-6, $"loss {fused.item<float>()} vs {plain.item<float>()}");
        string[] names = ["h", "W", "b"];
        for (int i = 0; i < inputs.Length; i++)
        {
            var rel = RelDiff(plainGrads[i], fusedGrads[i]);
            output.WriteLine($"chunk {chunk}: d{names[i]} max rel diff {rel:g3}");
            Assert.True(rel <= 1e-5, $"d{names[i]}: max rel diff {rel:g3}");
        }
        Assert.True(fusedGrads[0][0, 5..10].eq(0).all().item<bool>(), "tokens with no target get no gradient");
    }

    [Fact]
    public void Bfloat16_matches_the_plain_path_within_bf16_rounding()
    {
        using var scope = NewDisposeScope();
        var (h, w, b, labels) = Data(ScalarType.BFloat16);
        var (plain, plainGrads) = LossAndGrads(() => Losses.CausalLM(nn.functional.linear(h, w, b), labels), h, w, b);
        var (fused, fusedGrads) = LossAndGrads(() => Losses.CausalLMFused(h, w, b, labels, chunkTokens: 5), h, w, b);
        Assert.Equal(ScalarType.Float32, fused.dtype);
        // bfloat16 logits carry 8 bits: a chunk's GEMM may round some logit one unit (0.4%) apart from the whole batch's.
        Assert.True(RelDiff(plain, fused) <= 2e-3, $"loss {fused.item<float>()} vs {plain.item<float>()}");
        for (int i = 0; i < 3; i++)
        {
            Assert.Equal(ScalarType.BFloat16, fusedGrads[i].dtype);
            var rel = RelDiff(plainGrads[i], fusedGrads[i]);
            output.WriteLine($"bf16 grad {i}: max rel diff {rel:g3}");
            Assert.True(rel <= 2e-2, $"grad {i}: max rel diff {rel:g3}");
        }
    }

    [Fact]
    public void Frozen_head_and_no_grad_are_supported()
    {
        using var scope = NewDisposeScope();
        var (h, w, _, labels) = Data(ScalarType.Float32);
        var frozen = w.detach();
        var (plain, plainGrads) = LossAndGrads(() => Losses.CausalLM(nn.functional.linear(h, frozen), labels), h);
        var (fused, fusedGrads) = LossAndGrads(() => Losses.CausalLMFused(h, frozen, null, labels, 4), h);
        Assert.True(RelDiff(plain, fused) <= 1e-6);
        Assert.True(RelDiff(plainGrads[0], fusedGrads[0]) <= 1e-5);
        Assert.Null(frozen.grad);

        using var _ = no_grad();
        var eval = Losses.CausalLMFused(h, w, null, labels, 4);
        Assert.False(eval.requires_grad);
        Assert.True(RelDiff(plain, eval) <= 1e-6);
    }

    [Fact]
    public void No_counted_token_gives_nan_like_cross_entropy_and_zero_gradients()
    {
        using var scope = NewDisposeScope();
        var (h, w, _, labels) = Data(ScalarType.Float32);
        labels.fill_(Losses.IgnoreIndex);
        var (plain, plainGrads) = LossAndGrads(() => Losses.CausalLM(nn.functional.linear(h, w), labels), h, w);
        var (fused, fusedGrads) = LossAndGrads(() => Losses.CausalLMFused(h, w, null, labels, 5), h, w);
        Assert.True(float.IsNaN(plain.item<float>()));
        Assert.True(float.IsNaN(fused.item<float>()));
        for (int i = 0; i < 2; i++) Numerics.Close(plainGrads[i], fusedGrads[i], 0, $"grad {i}");
    }

    static PretrainedModel TinyLlama() => AutoModel.Load(Repo.Fixture("models", "tiny-llama"));

    static Batch SampleBatch()
    {
        using var g = new Generator(3);
        var ids = randint(2, 512, [2, 16], generator: g);
        var labels = ids.clone();
        labels[1, ..5] = tensor(Losses.IgnoreIndex);
        return new Batch(ids, labels, ones_like(ids), null, null, null, 0, 0);
    }

    [Fact]
    public void The_causal_objective_fuses_only_a_plain_head()
    {
        using var scope = NewDisposeScope();
        var inputs = ModelInputs.Ids(SampleBatch().InputIds);
        Assert.NotNull(TinyLlama().HiddenAndHead(inputs));
        Assert.NotNull(((ILanguageModel)PeftModel.Create(TinyLlama(), new LoraConfig { R = 4, TargetModules = ["q_proj", "v_proj"] })).HiddenAndHead(inputs));
        Assert.Null(PeftModel.Create(TinyLlama(), new LoraConfig { R = 4, TargetModules = ["q_proj", "lm_head"] }).HiddenAndHead(inputs));
        Assert.Null(PeftModel.Create(TinyLlama(), new LoraConfig { R = 4, TargetModules = ["q_proj"], ModulesToSave = ["lm_head"] }).HiddenAndHead(inputs));
        Assert.Null(PeftModel.Create(TinyLlama(), new PromptTuningConfig { NumVirtualTokens = 4, TaskType = "CAUSAL_LM" }).HiddenAndHead(inputs));
        var gpt2 = AutoModel.Load(Repo.Fixture("models", "tiny-gpt2"));
        Assert.NotNull(gpt2.HiddenAndHead(inputs));
    }

    [Theory]
    [InlineData("llama")]
    [InlineData("gpt2")]
    public void The_fused_objective_gives_the_plain_loss_and_adapter_gradients(string arch)
    {
        using var scope = NewDisposeScope();
        var model = AutoModel.Load(Repo.Fixture("models", $"tiny-{arch}"));
        var pm = PeftModel.Create(model, new LoraConfig { R = 4, TargetModules = arch == "gpt2" ? ["c_attn"] : ["q_proj", "v_proj"], InitLoraWeights = "gaussian" });
        var b = SampleBatch();
        var ps = pm.TrainableParameters().Select(p => p.P).ToArray();
        var (plain, plainGrads) = LossAndGrads(() => Losses.CausalLM(pm.Forward(ModelInputs.Ids(b.InputIds, b.AttentionMask)), b.Labels!), ps);
        var (fused, fusedGrads) = LossAndGrads(() => Objectives.CausalLM(pm, b, chunkTokens: 7), ps);
        Assert.True(RelDiff(plain, fused) <= 1e-6, $"loss {fused.item<float>()} vs {plain.item<float>()}");
        for (int i = 0; i < ps.Length; i++) Assert.True(RelDiff(plainGrads[i], fusedGrads[i]) <= 1e-4, $"grad {i}: {RelDiff(plainGrads[i], fusedGrads[i]):g3}");
    }
}
