using System.Text.Json.Nodes;
using PeftSharp.Data;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Training;
using PeftSharp.Tuners;
using PeftSharp.Tuners.IncreLora;
using PeftSharp.Tuners.Lora;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Grow;

[Collection(SerialRng.Name)]
public class IncreLoraTests
{
    static PretrainedModel TinyLlama() => AutoModel.Load(Repo.Fixture("models", "tiny-llama"));

    static IncreLoraConfig Config(double dropout = 0) => new()
    {
        InitR = 1, TargetR = 3, TopH = 1, IncreRankNum = 2, Tinit = 1, DeltaT = 2, LoraAlpha = 4, LoraDropout = dropout,
        TargetModules = ModuleSelector.Of("q_proj", "v_proj"),
    };

    static PeftModel Fresh(IncreLoraConfig c)
    {
        manual_seed(1);
        var pm = PeftModel.Create(TinyLlama(), c);
        pm.Base.train();
        return pm;
    }

    static BatchSource Data(int rows = 4, int length = 16)
    {
        using var g = new Generator(7);
        using var ids = randint(2, 512, [rows, length], generator: g);
        return BatchSource.FromInputIds(ids);
    }

    static Tensor Logits(PeftModel pm, long seed = 3)
    {
        using var _ = no_grad();
        pm.Base.eval();
        var logits = pm.Forward(ModelInputs.Ids(randint(2, 500, [2, 12], generator: new Generator((ulong)seed))));
        pm.Base.train();
        return logits;
    }

    static IEnumerable<(string Path, IncreLoraLayer Layer)> Layers(PeftModel pm) =>
        pm.TunerLayers().Select(l => (l.Path, (IncreLoraLayer)l.Layer)).OrderBy(l => l.Path, StringComparer.Ordinal);

    [Fact]
    public void Ranks_grow_in_the_module_where_the_gradient_lives_and_stop_at_the_budget()
    {
        using var scope = NewDisposeScope();
        var pm = Fresh(Config());
        var layers = Layers(pm).ToList();
        // Not the first path, so that a tie broken by path order could not pick it by chance.
        var (hot, _) = layers[^1];
        using var increaser = new RankIncreaser(pm);
        Assert.Equal(3 * layers.Count, increaser.TargetTotal);
        var parameters = pm.TrainableParameters();
        using var opt = new AdamW(parameters, weightDecay: 0);
        var batch = Data().MicroBatch([0, 1, 2, 3], 0, 4);
        var grown = new List<string>();
        for (int step = 1; step <= 10; step++)
        {
            using var stepScope = NewDisposeScope();
            opt.ZeroGrad();
            (Objectives.CausalLM(pm, batch) + increaser.OrthogonalRegularization(pm)).backward();
            // Every module but one loses its gradient: only that one is sensitive.
            foreach (var (path, layer) in layers.Where(l => l.Path != hot))
                foreach (var p in new[] { layer.A("default"), layer.E("default"), layer.B("default") }) p.grad!.zero_();
            opt.Step(1e-2);
            grown.AddRange(increaser.UpdateAndIncrease(pm, step));
        }
        // Budget 3 per module: the hot module takes all the growth, two components at a time, until the total is spent.
        var ranks = increaser.Ranks(pm);
        int budget = 2 * layers.Count;
        Assert.Equal(1 + budget, ranks[hot]);
        Assert.All(ranks.Where(r => r.Key != hot), r => Assert.Equal(1, r.Value));
        Assert.All(grown, g => Assert.Equal(hot, g));
        Assert.Equal(budget / 2, grown.Count);
        // The optimizer followed: the grown parameters trained after growing (their state has their shape).
        var state = opt.StateDict();
        var a = parameters.Single(p => p.Name.Contains(hot + ".") && p.Name.Contains("lora_A"));
        Assert.Equal(a.P.shape, state[a.Name + ".exp_avg"].shape);
    }

    [Fact]
    public void Growing_leaves_the_output_unchanged_and_the_new_components_train()
    {
        using var scope = NewDisposeScope();
        var pm = Fresh(Config());
        var parameters = pm.TrainableParameters();
        using var opt = new AdamW(parameters, weightDecay: 0);
        var batch = Data().MicroBatch([0, 1, 2, 3], 0, 4);
        void Step()
        {
            opt.ZeroGrad();
            Objectives.CausalLM(pm, batch).backward();
            opt.Step(5e-2);
        }
        Step(); Step();   // Λ is no longer zero, so a changed scale would show
        var before = Logits(pm);
        foreach (var (_, layer) in Layers(pm)) layer.GrowInPlace("default", 3);
        Assert.All(Layers(pm), l => Assert.Equal(4, l.Layer.Rank("default")));
        Numerics.Close(before, Logits(pm), 1e-6, "after growing");
        var (_, first) = Layers(pm).First();
        var newQ = first.A("default").detach()[1..].clone();
        Step(); Step();
        Assert.True(Numerics.MaxAbsDiff(before, Logits(pm)) > 1e-4, "training after growth moves the output");
        Assert.True(first.E("default").detach()[1..].abs().sum().item<float>() > 0, "the new singular values train");
        Assert.False(Numerics.Same(newQ, first.A("default").detach()[1..]), "the new rows of Q train");
    }

    static TrainingOptions Options(string dir) => new()
    {
        Method = "increlora", MaxSteps = 8, SaveSteps = 3, LearningRate = 1e-2, WarmupRatio = 0, LrSchedulerType = "constant",
        PerDeviceTrainBatchSize = 2, Shuffle = false, OutputDir = dir,
    };

    [Fact]
    public void A_run_resumed_from_a_checkpoint_matches_a_straight_one_and_saves_a_plain_lora()
    {
        var dir = IO.SafetensorsTests.TempDir();
        var data = Data();
        var straight = Fresh(Config(dropout: 0.1));
        var a = Trainer.Run(Methods.Trainable(straight, "causal_lm"), data, null, Options(Path.Combine(dir, "straight")), new TrainerHooks { HandleCtrlC = false });
        Assert.Equal(StopReason.Completed, a.Reason);
        var finalRanks = Layers(straight).Select(l => l.Layer.Rank("default")).ToList();
        Assert.True(finalRanks.Sum() > Layers(straight).Count() + 2, $"ranks grew after step 3 for this test to mean anything: {string.Join(",", finalRanks)}");

        // Step 3 follows the increase of step 2; step 6 holds the increase of step 6 with optimizer state from before it.
        foreach (var from in new[] { 3, 6 })
        {
            var resumed = Fresh(Config(dropout: 0.1));
            var options = Options(Path.Combine(dir, $"resumed-{from}")) with { ResumeFromCheckpoint = Path.Combine(dir, "straight", $"checkpoint-{from}") };
            var b = Trainer.Run(Methods.Trainable(resumed, "causal_lm"), data, null, options, new TrainerHooks { HandleCtrlC = false });
            Assert.Equal(a.Steps.Skip(from).Select(s => s.Loss), b.Steps.Select(s => s.Loss));
            Assert.Equal(finalRanks, Layers(resumed).Select(l => l.Layer.Rank("default")));
            var done = resumed.TrainableParameters().ToDictionary(p => p.Name, p => p.P);
            foreach (var (name, p) in straight.TrainableParameters()) Assert.True(Numerics.Same(p.detach(), done[name].detach()), $"resumed from {from}: {name}");
        }

        // The adapter is a PEFT LoRA with the grown ranks in rank_pattern, and loads as one with the same logits.
        var saved = Path.Combine(dir, "straight");
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(saved, "adapter_config.json")))!;
        Assert.Equal("LORA", json["peft_type"]!.GetValue<string>());
        var pattern = json["rank_pattern"]!.AsObject().ToDictionary(kv => kv.Key, kv => kv.Value!.GetValue<int>());
        Assert.Equal(finalRanks, Layers(straight).Select(l => pattern[l.Path]));
        var lora = PeftModel.FromPretrained(TinyLlama(), saved);
        Assert.IsType<LoraConfig>(lora.Configs["default"]);
        Numerics.Close(Logits(straight), Logits(lora), 1e-6, "saved as LoRA");
    }
}
