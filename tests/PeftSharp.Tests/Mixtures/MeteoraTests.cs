using System.Text.Json.Nodes;
using PeftSharp.Data;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tests.Tuners;
using PeftSharp.Training;
using PeftSharp.Tuners;
using PeftSharp.Tuners.Lora;
using PeftSharp.Tuners.Meteora;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Mixtures;

/// <summary>
/// MeteoRA on a synthetic two-task problem on tiny-llama: task 0's rows are random tokens of 10..29, task 1's of 300..319
/// (each a vocabulary of its own, so the best a model can do is ln 20 on either, and only if it knows the task). One LoRA
/// is trained on each task alone; the mixture's gate is then trained on mixed data with both adapters frozen.
/// </summary>
[Collection(SerialRng.Name)]
public class MeteoraTests
{
    static PretrainedModel Base()
    {
        var m = AutoModel.Load(Repo.Fixture("models", "tiny-llama"));
        m.eval();
        return m;
    }

    /// <summary>[rows, 16] random tokens of the task's own 20 ids.</summary>
    static Tensor Task(int task, int rows, long seed) =>
        randint(task == 0 ? 10 : 300, task == 0 ? 30 : 320, [rows, 16], generator: new Generator((ulong)seed));

    static Tensor Mixed(int rows, long seed) => cat([Task(0, rows / 2, seed), Task(1, rows / 2, seed + 1000)], 0);

    static double Loss(PeftModel pm, Tensor ids)
    {
        using var _ = no_grad();
        return Losses.CausalLM(pm.Forward(ModelInputs.Ids(ids)), ids).item<float>();
    }

    static void Train(PeftModel pm, Func<int, Tensor> batch, int steps, double lr)
    {
        pm.Base.train();
        using var opt = optim.Adam(pm.TrainableParameters().Select(x => x.P), lr);
        for (int i = 0; i < steps; i++)
        {
            using var scope = NewDisposeScope();
            opt.zero_grad();
            var ids = batch(i);
            Losses.CausalLM(pm.Forward(ModelInputs.Ids(ids)), ids).backward();
            opt.step();
        }
        pm.Base.eval();
    }

    /// <summary>A LoRA trained on one task alone, saved; its folder.</summary>
    static string Specialist(int task, string dir)
    {
        manual_seed(10 + task);
        var pm = PeftModel.Create(Base(), new LoraConfig { R = 4, LoraAlpha = 8, TargetModules = ModuleSelector.Of("q_proj", "v_proj", "o_proj", "down_proj") });
        Train(pm, i => Task(task, 8, 100 + i), steps: 40, lr: 5e-2);
        var path = Path.Combine(dir, $"task{task}");
        pm.Save(path);
        return path;
    }

    static readonly Lazy<(string Up, string Down)> Specialists = new(() =>
    {
        var dir = IO.SafetensorsTests.TempDir();
        return (Specialist(0, dir), Specialist(1, dir));
    });

    /// <summary>The two task adapters (trained once per test run), for the contract row too.</summary>
    internal static string[] AdapterDirs => [Specialists.Value.Up, Specialists.Value.Down];

    static PeftModel Alone(string dir) => PeftModel.FromPretrained(Base(), dir);

    [Fact]
    public void The_gate_learns_to_route_and_the_mixture_beats_each_adapter_alone_on_mixed_held_out_data()
    {
        using var scope = NewDisposeScope();
        manual_seed(12);
        var mixture = PeftModel.Create(Base(), new MeteoraConfig { Adapters = AdapterDirs, TopK = 2 });
        Assert.All(mixture.TrainableParameters(), x => Assert.Contains(".moe_gate.", x.Name));
        Train(mixture, i => Mixed(8, 200 + i), steps: 30, lr: 5e-2);

        var heldOut = Mixed(16, 999);
        double mixed = Loss(mixture, heldOut), up = Loss(Alone(AdapterDirs[0]), heldOut), down = Loss(Alone(AdapterDirs[1]), heldOut);
        Console.WriteLine($"mixed held-out loss: MeteoRA {mixed:F3}, task-0 LoRA alone {up:F3}, task-1 LoRA alone {down:F3}");
        Assert.True(mixed < up && mixed < down, $"MeteoRA {mixed:F3} must beat each adapter alone ({up:F3}, {down:F3})");

        // Routing: over all layers and tokens, task 0's tokens weigh adapter 0 more and task 1's adapter 1.
        double WeightOnOwnAdapter(int task)
        {
            var sum = zeros(2);
            mixture.Routing.Observer = (_, _, w) => sum.add_(w.sum([0]));
            Loss(mixture, Task(task, 8, 555));
            mixture.Routing.Observer = null;
            return (sum[task] / sum.sum()).item<float>();
        }
        double own0 = WeightOnOwnAdapter(0), own1 = WeightOnOwnAdapter(1);
        Console.WriteLine($"share of gate weight on the task's own adapter: task 0 {own0:F3}, task 1 {own1:F3}");
        // Measured 0.52-0.58 (task 0) and 0.54-0.68 (task 1) over runs: the specialists are weak (held-out 6.12 vs ln 512 = 6.24),
        // so the preference is mild; this bound has little margin and is the first thing to revisit.
        Assert.True((own0 + own1) / 2 > 0.55, $"the gate must prefer each task's own adapter on average: {own0:F3}, {own1:F3}");
    }

    [Fact]
    public void The_mixture_embeds_the_adapters_and_references_their_folders()
    {
        using var scope = NewDisposeScope();
        manual_seed(12);
        var mixture = PeftModel.Create(Base(), new MeteoraConfig { Adapters = AdapterDirs, TopK = 1 });
        var dir = Path.Combine(IO.SafetensorsTests.TempDir(), "meteora");
        mixture.Save(dir);
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "adapter_config.json")))!.AsObject();
        Assert.Equal("METEORA", (string?)config["peft_type"]);
        Assert.Equal(AdapterDirs, config["adapters"]!.AsArray().Select(n => (string)n!));
        Assert.Equal(4, (int?)config["r"]);
        Assert.Equal([2.0, 2.0], config["scalings"]!.AsArray().Select(n => (double)n!));
        using var f = PeftSharp.IO.SafetensorsFile.Open(Path.Combine(dir, PeftModel.WeightsFile));
        const string q = "base_model.model.model.layers.0.self_attn.q_proj.";
        // lora_A stacks the adapters' A along the rank: rows 4..7 are the second adapter's.
        using var second = PeftSharp.IO.SafetensorsFile.Open(Path.Combine(AdapterDirs[1], PeftModel.WeightsFile));
        Numerics.Close(second.Load(q + "lora_A.weight"), f.Load(q + "lora_A.weight").narrow(0, 4, 4), 0, "embedded A");
        Numerics.Close(second.Load(q + "lora_B.weight"), f.Load(q + "lora_B.weight").narrow(1, 4, 4), 0, "embedded B");
        Assert.Equal([2, 64], f.Load(q + "moe_gate.weight").shape);
        // Reloading reads the mixture's own file only: the adapter folders may be gone.
        var back = PeftModel.FromPretrained(Base(), dir);
        var ids = Mixed(4, 77);
        Numerics.Close(mixture.Forward(ModelInputs.Ids(ids)), back.Forward(ModelInputs.Ids(ids)), 1e-6, "reloaded");
    }

    [Fact]
    public void The_forward_is_the_top_k_softmax_mixture_of_scaled_lora_deltas()
    {
        using var scope = NewDisposeScope();
        manual_seed(12);
        var mixture = PeftModel.Create(Base(), new MeteoraConfig { Adapters = AdapterDirs, TopK = 2 });
        var layer = mixture.TunerLayers().Select(x => x.Layer).OfType<MeteoraLayer>().First();
        var sd = ((ITunerLayer)layer).StateDict("default").ToDictionary(kv => kv.Key, kv => kv.Value);
        var x = randn(2, 3, 64);
        using var _ = no_grad();
        var actual = ((nn.Module<Tensor, Tensor>)layer).call(x);
        var baseOut = ((nn.Module<Tensor, Tensor>)layer.BaseLayer).call(x).reshape(-1, sd["lora_B.weight"].shape[0]);
        var rows = new List<Tensor>();
        var tokens = x.reshape(-1, 64);
        for (int t = 0; t < tokens.shape[0]; t++)
        {
            var w = sd["moe_gate.weight"].matmul(tokens[t]).softmax(0);   // top-2 of 2: both, softmax of both logits
            var y = baseOut[t];
            for (int i = 0; i < 2; i++)
            {
                var a = sd["lora_A.weight"].narrow(0, i * 4, 4);
                var b = sd["lora_B.weight"].narrow(1, i * 4, 4);
                y = y + w[i] * 2.0 * b.matmul(a.matmul(tokens[t]));
            }
            rows.Add(y);
        }
        Numerics.Close(stack(rows).reshape(actual.shape), actual, 1e-5, "mixture");
    }

    [Fact]
    public void The_meteora_preset_says_where_to_name_the_adapters()
    {
        var e = Assert.Throws<ArgumentException>(() => TunerRegistry.Preset("meteora")!.Build(null!));
        Assert.Contains("--adapter-config", e.Message);
    }
}
