using PeftSharp.Generation;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tuners.LoHa;
using PeftSharp.Tuners.Lora;
using PeftSharp.Tuners.PromptTuning;
using static TorchSharp.torch;

namespace PeftSharp.Tests.PeftModelTests; // not ".Peft": that would hide PeftSharp.Peft from other tests

/// <summary>Mixed-adapter batches: each row must equal a run of the whole batch under that row's adapter alone.</summary>
[Collection(SerialRng.Name)]
public class RowAdapterTests
{
    static PretrainedModel TinyLlama() => AutoModel.Load(Repo.Fixture("models", "tiny-llama"));

    // Three LoRA adapters of different ranks and targets (one DoRA, one with an embedding), random B so each changes the output.
    static PeftModel ThreeAdapters()
    {
        manual_seed(11);
        var pm = PeftModel.Create(TinyLlama(), new LoraConfig { R = 2, LoraAlpha = 4, TargetModules = ["q_proj", "v_proj"], InitLoraWeights = "false" }, "a");
        pm.AddAdapter("b", new LoraConfig { R = 4, LoraAlpha = 8, TargetModules = ["all-linear"], UseDora = true, InitLoraWeights = "false" });
        pm.AddAdapter("c", new LoraConfig { R = 8, LoraAlpha = 16, TargetModules = ["q_proj", "down_proj", "embed_tokens"], InitLoraWeights = "false" });
        pm.Base.eval();
        return pm;
    }

    static readonly string?[] Rows = ["a", "b", null, "c", "a", "b"];

    // The whole batch under one adapter (null: the base model alone).
    static Tensor Alone(PeftModel pm, string? adapter, Func<Tensor> run)
    {
        if (adapter is null) { using var _ = pm.DisableAdapters(); return run(); }
        pm.SetAdapter(adapter);
        return run();
    }

    [Fact]
    public void Each_row_equals_its_adapter_run_alone()
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var pm = ThreeAdapters();
        var ids = randint(2, 512, [Rows.Length, 7], dtype: ScalarType.Int64);
        var mask = ones_like(ids);
        mask[1, ..2] = 0; // left padding on one row
        var inputs = ModelInputs.Ids(ids, mask);

        var mixed = pm.Forward(inputs, Rows);
        var baseLogits = Alone(pm, null, () => pm.Forward(inputs));
        for (int i = 0; i < Rows.Length; i++)
        {
            var alone = Alone(pm, Rows[i], () => pm.Forward(inputs));
            Numerics.Close(alone[i], mixed[i], 1e-6, $"row {i} ({Rows[i] ?? "base"})");
            if (Rows[i] is not null) Assert.True(Numerics.MaxAbsDiff(alone[i], baseLogits[i]) > 1e-3, $"adapter {Rows[i]} changes nothing");
        }
        // The scope ends with the forward: the active adapter runs every row again.
        pm.SetAdapter("c");
        Numerics.Close(Alone(pm, "c", () => pm.Forward(inputs)), pm.Forward(inputs), 0, "after the mixed batch");
    }

    [Fact]
    public void Cached_greedy_generation_matches_per_adapter_generation()
    {
        using var scope = NewDisposeScope();
        var pm = ThreeAdapters();
        int[][] prompts = [[5, 9, 13, 2], [7, 7, 30], [100, 3, 4, 8, 9], [40, 41], [11, 12, 13], [300, 2, 1]];
        var options = new GenerationOptions { MaxNewTokens = 8 };
        List<int[]> mixed;
        using (pm.RowAdapters(Rows)) mixed = TextGenerator.Generate(pm, prompts, options);
        for (int i = 0; i < Rows.Length; i++)
        {
            List<int[]> alone;
            if (Rows[i] is null) { using var _ = pm.DisableAdapters(); alone = TextGenerator.Generate(pm, prompts, options); }
            else { pm.SetAdapter(Rows[i]!); alone = TextGenerator.Generate(pm, prompts, options); }
            Assert.Equal(alone[i], mixed[i]);
        }
    }

    [Fact]
    public void Wrong_row_count_unknown_merged_prompt_and_unsupported_adapters_are_refused_by_name()
    {
        using var scope = NewDisposeScope();
        var pm = ThreeAdapters();
        var ids = ModelInputs.Ids(zeros(2, 3, ScalarType.Int64));
        Assert.Contains("3 rows but the batch has 2", Assert.Throws<ArgumentException>(() => pm.Forward(ids, ["a", "b", null])).Message);
        Assert.Contains("'zz'", Assert.Throws<KeyNotFoundException>(() => pm.RowAdapters(["a", "zz"])).Message);

        pm.Base.train();
        Assert.Contains("model.eval()", Assert.Throws<InvalidOperationException>(() => pm.RowAdapters(["a", null])).Message);
        pm.Base.eval();

        pm.MergeAdapter(["b"]);
        Assert.Contains("adapter 'b' is merged", Assert.Throws<InvalidOperationException>(() => pm.RowAdapters(["a", null])).Message);
        pm.UnmergeAdapter();

        var loha = PeftModel.Create(TinyLlama(), new LoHaConfig { R = 2, TargetModules = ["q_proj"] }, "h");
        Assert.Contains("adapter 'h' is LOHA", Assert.Throws<NotSupportedException>(() => loha.RowAdapters(["h", null])).Message);

        var prompt = PeftModel.Create(TinyLlama(), new PromptTuningConfig { NumVirtualTokens = 4, TaskType = "CAUSAL_LM" }, "p");
        Assert.Contains("adapter 'p' is prompt learning", Assert.Throws<NotSupportedException>(() => prompt.RowAdapters(["p", null])).Message);
    }
}
