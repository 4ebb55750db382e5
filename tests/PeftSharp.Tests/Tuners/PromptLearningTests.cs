using PeftSharp.Generation;
using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tuners;
using PeftSharp.Tuners.PrefixTuning;
using PeftSharp.Tuners.PromptLearning;
using PeftSharp.Tuners.PromptTuning;
using PeftSharp.Tuners.PTuning;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tuners;

public class PromptLearningTests
{
    [Theory]
    [InlineData("llama-prompt-tuning")]
    [InlineData("llama-prefix-tuning")]
    public void Logits_match_peft(string name)
    {
        using var scope = NewDisposeScope();
        var f = new AdapterFixture(name);
        var pm = f.LoadPeft();
        using var _ = no_grad();
        var expected = f.Expected("logits");
        var got = pm.Forward(f.Inputs());
        Console.WriteLine($"{name}: max abs diff {Numerics.MaxAbsDiff(expected, got):g3}");
        Numerics.Close(expected, got, 1e-4, name);
    }

    [Fact]
    public void Prompt_tuning_adds_four_leading_positions()
    {
        using var scope = NewDisposeScope();
        var f = new AdapterFixture("llama-prompt-tuning");
        using var _ = no_grad();
        Assert.Equal([2L, 20, 512], f.LoadPeft().Forward(f.Inputs()).shape);
    }

    [Theory]
    [InlineData("llama-prompt-tuning")]
    [InlineData("llama-prefix-tuning")]
    public void Saved_adapter_loads_back_identically(string name)
    {
        using var scope = NewDisposeScope();
        var f = new AdapterFixture(name);
        var dir = Path.Combine(IO.SafetensorsTests.TempDir(), "adapter");
        f.LoadPeft().Save(dir);
        using (var orig = SafetensorsFile.Open(Path.Combine(f.Folder, PeftModel.WeightsFile)))
        using (var ours = SafetensorsFile.Open(Path.Combine(dir, PeftModel.WeightsFile)))
        {
            Assert.Equal(orig.Names.Order(), ours.Names.Order());
            foreach (var n in orig.Names) Assert.True(Numerics.Same(orig.Load(n), ours.Load(n)), n);
        }
        var back = PeftModel.FromPretrained(f.LoadBase(), dir);
        using var _ = no_grad();
        Numerics.Close(f.Expected("logits"), back.Forward(f.Inputs()), 1e-4);
    }
}

public class PromptLearningBehaviourTests
{
    static PretrainedModel Llama() => AutoModel.Load(Repo.Fixture("models", "tiny-llama"));
    static PretrainedModel Gpt2() => AutoModel.Load(Repo.Fixture("models", "tiny-gpt2"));

    public static TheoryData<string> Methods => new() { "prompt", "prefix", "prefix-projection", "p-mlp", "p-lstm" };

    internal static PeftConfig Config(string method) => method switch
    {
        "prompt" => new PromptTuningConfig { NumVirtualTokens = 4, TaskType = "CAUSAL_LM" },
        "prefix" => new PrefixTuningConfig { NumVirtualTokens = 4, TaskType = "CAUSAL_LM" },
        "prefix-projection" => new PrefixTuningConfig { NumVirtualTokens = 4, PrefixProjection = true, EncoderHiddenSize = 24, TaskType = "CAUSAL_LM" },
        "p-mlp" => new PromptEncoderConfig { NumVirtualTokens = 4, EncoderHiddenSize = 32, TaskType = "CAUSAL_LM" },
        "p-lstm" => new PromptEncoderConfig { NumVirtualTokens = 4, EncoderReparameterizationType = "LSTM", EncoderHiddenSize = 16, TaskType = "CAUSAL_LM" },
        _ => throw new ArgumentException(method),
    };

    // Prompt tuning and P-tuning prepend their tokens to the input: the logits have them too.
    static int VirtualPositions(string method) => method.StartsWith("prefix") ? 0 : 4;

    static int[] ManualGreedy(PeftModel pm, int[] prompt, int steps)
    {
        var ids = prompt.ToList();
        using var _ = no_grad();
        for (int i = 0; i < steps; i++)
        {
            using var scope = NewDisposeScope();
            var logits = pm.Forward(ModelInputs.Ids(tensor(ids.Select(x => (long)x).ToArray()).unsqueeze(0)));  // full forward, no cache
            ids.Add((int)logits[0, -1].argmax().item<long>());
        }
        return ids.ToArray();
    }

    [Theory]
    [MemberData(nameof(Methods))]
    public void Cached_generation_equals_full_forward_greedy(string method)
    {
        using var scope = NewDisposeScope();
        var pm = PeftModel.Create(Llama(), Config(method));
        int[] prompt = [5, 9, 33, 2, 7, 100];
        var got = TextGenerator.Generate(pm, [prompt], new GenerationOptions { MaxNewTokens = 8 })[0];
        Assert.Equal(ManualGreedy(pm, prompt, 8), got);
        using (pm.DisableAdapters())
            Assert.NotEqual(TextGenerator.Generate(pm, [prompt], new GenerationOptions { MaxNewTokens = 8 })[0], got);
    }

    [Theory]
    [InlineData("llama-prompt-tuning")]
    [InlineData("llama-prefix-tuning")]
    public void Fixture_adapters_generate_like_full_forwards_and_batch_with_left_padding(string name)
    {
        using var scope = NewDisposeScope();
        var pm = new AdapterFixture(name).LoadPeft();
        int[][] prompts = [[5, 9, 33, 2, 7, 100, 12], [44, 3], [200, 201, 202, 203]];
        var opts = new GenerationOptions { MaxNewTokens = 6, PadTokenId = 1 };
        var batched = TextGenerator.Generate(pm, prompts, opts);
        for (int i = 0; i < prompts.Length; i++)
        {
            Assert.Equal(ManualGreedy(pm, prompts[i], 6), batched[i]);
            Assert.Equal(TextGenerator.Generate(pm, [prompts[i]], opts)[0], batched[i]);
        }
    }

    [Theory]
    [InlineData("prompt")]
    [InlineData("prefix")]
    [InlineData("p-mlp")]
    public void Training_works_on_gpt2(string method)
    {
        using var scope = NewDisposeScope();
        var pm = PeftModel.Create(Gpt2(), Config(method));
        TrainingLoop.AssertLearns(pm, TrainingLoop.Batch(), lr: 0.3, virtualPositions: VirtualPositions(method));
    }

    [Fact]
    public void P_tuning_encoder_has_peft_shapes_and_only_it_trains()
    {
        using var scope = NewDisposeScope();
        long n = 4, d = 64, h = 32;
        var mlp = PeftModel.Create(Llama(), Config("p-mlp"));
        Assert.Equal(n * d + (d * h + h) + (h * h + h) + (h * d + d), mlp.TrainableParameters().Sum(p => p.P.numel()));
        h = 16;
        var lstm = PeftModel.Create(Llama(), Config("p-lstm"));
        long lstmParams = 2 * (4 * h * (d + h) + 8 * h) + 2 * (4 * h * (2 * h + h) + 8 * h);  // 2 layers, 2 directions
        long mlpHead = (2 * h * 2 * h + 2 * h) + (2 * h * d + d);
        Assert.Equal(n * d + lstmParams + mlpHead, lstm.TrainableParameters().Sum(p => p.P.numel()));
        Assert.All(lstm.Base.parameters(), p => Assert.False(p.requires_grad));
        using var _ = no_grad();
        var inputs = new AdapterFixture("llama-prompt-tuning").Inputs();
        Assert.Equal([2L, 20, 512], lstm.Forward(inputs).shape);
        var table = lstm.AdapterStateDict("default")["prompt_embeddings"];
        Assert.Equal([n, d], table.shape);
    }

    [Fact]
    public void Text_init_copies_the_word_embeddings_of_the_text_repeated()
    {
        using var scope = NewDisposeScope();
        var model = Llama();
        var config = new PromptTuningConfig
        {
            NumVirtualTokens = 5, PromptTuningInit = "TEXT", PromptTuningInitText = "abc", TokenizerNameOrPath = "bytes",
            Tokenizer = s => s.Select(ch => (int)ch).ToArray(),
        };
        var pm = PeftModel.Create(model, config);
        using var _ = no_grad();
        var expected = model.Embed(tensor(new long[] { 97, 98, 99, 97, 98 }));
        Numerics.Close(expected, pm.AdapterStateDict("default")["prompt_embeddings"], 0, "TEXT init");
        var noTokenizer = Assert.Throws<ArgumentException>(() => PeftModel.Create(Llama(), config with { Tokenizer = null }));
        Assert.Contains("tokenizer", noTokenizer.Message);
    }

    [Fact]
    public void Prompt_tuning_works_on_the_bert_classifier_and_prefix_tuning_says_why_not()
    {
        using var scope = NewDisposeScope();
        var bert = AutoModel.Load(Repo.Fixture("models", "tiny-bert-cls"));
        var pm = PeftModel.Create(bert, new PromptTuningConfig { NumVirtualTokens = 3, TaskType = "SEQ_CLS" });
        var inputs = new AdapterFixture("bert-cls-lora").Inputs();
        using (no_grad()) Assert.Equal([2L, 3], pm.Forward(inputs).shape);
        var e = Assert.Throws<NotSupportedException>(() =>
            PeftModel.Create(AutoModel.Load(Repo.Fixture("models", "tiny-bert-cls")), new PrefixTuningConfig { NumVirtualTokens = 3 }));
        Assert.Contains("KV cache", e.Message);
    }

    [Fact]
    public void A_prefix_for_another_model_is_refused_with_the_shapes()
    {
        var f = new AdapterFixture("llama-prefix-tuning");
        var e = Assert.ThrowsAny<Exception>(() => PeftModel.FromPretrained(Gpt2(), f.Folder));
        Assert.Contains("another model", e.Message);
    }
}
