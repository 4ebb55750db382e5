using System.Text.Json.Nodes;
using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tests.Tuners;
using PeftSharp.Tuners;
using PeftSharp.Tuners.Poly;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Mixtures;

/// <summary>
/// Poly/MHR has no PEFT fixture: its forward is checked against PEFT's equations written out with plain loops and
/// products (no einsum), and its file against PEFT's key names.
/// </summary>
public class PolyTests
{
    static readonly ModuleSelector QV = ModuleSelector.Of("q_proj", "v_proj");

    static (PolyLayer Layer, RoutingContext Routing) Layer(int nSplits, long inF = 8, long outF = 12)
    {
        manual_seed(5);
        var routing = new RoutingContext();
        var layer = new PolyLayer(nn.Linear(inF, outF), routing);
        layer.AddAdapter("default", new PolyConfig { R = 3, NTasks = 3, NSkills = 4, NSplits = nSplits, InitWeights = false });
        layer.Book.Active = ["default"];
        using (no_grad()) foreach (var (_, p) in layer.named_parameters()) p.add_(randn_like(p) * 0.5);
        return (layer, routing);
    }

    // h_b = W x_b + x_b A_b B_b / r, A_b = [Σ_s w[j,s] A[j,s]]_j stacked along the input, B_b likewise along the output,
    // w = σ(logits[t_b]) normalised over the skills of each split.
    static Tensor Expected(PolyLayer layer, Tensor x, long[] tasks)
    {
        var sd = layer.StateDict("default").ToDictionary(kv => kv.Key, kv => kv.Value);
        Tensor a = sd["poly_lora_A"], b = sd["poly_lora_B"], logits = sd["poly_router.module_logits"];
        long q = a.shape[0], s = a.shape[1], r = a.shape[3];
        var rows = new List<Tensor>();
        for (int row = 0; row < tasks.Length; row++)
        {
            var z = sigmoid(logits[tasks[row]]).view(q, s);
            var w = z / (z.sum(-1, keepdim: true) + 1e-12);
            var aBlocks = new List<Tensor>();
            var bBlocks = new List<Tensor>();
            for (int j = 0; j < q; j++)
            {
                Tensor aj = zeros_like(a[j, 0]), bj = zeros_like(b[j, 0]);
                for (int k = 0; k < s; k++)
                {
                    aj = aj + w[j, k] * a[j, k];
                    bj = bj + w[j, k] * b[j, k];
                }
                aBlocks.Add(aj);
                bBlocks.Add(bj);
            }
            var aRow = cat(aBlocks, 0);  // [in, r]
            var bRow = cat(bBlocks, 1);  // [r, out]
            rows.Add(((nn.Module<Tensor, Tensor>)layer.BaseLayer).call(x[row]) + x[row].matmul(aRow).matmul(bRow) / r);
        }
        return stack(rows);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(4)]
    public void The_eval_forward_is_the_written_out_equation(int nSplits)
    {
        using var scope = NewDisposeScope();
        var (layer, routing) = Layer(nSplits);
        layer.eval();
        long[] tasks = [2, 0, 1, 2];
        var x = randn(4, 5, 8);
        using var _ = no_grad();
        Tensor actual;
        using (routing.Use(tensor(tasks))) actual = layer.call(x);
        Numerics.Close(Expected(layer, x, tasks), actual, 1e-5, $"n_splits={nSplits}");
        // Rows of different tasks really get different mixtures (else the check above would not see the routing).
        using (routing.Use(tensor(new long[] { 0, 0, 0, 0 })))
            Assert.True(Numerics.MaxAbsDiff(actual, layer.call(x)) > 1e-3);
    }

    [Fact]
    public void Training_weights_are_relaxed_bernoulli_samples_normalised_per_split()
    {
        using var scope = NewDisposeScope();
        var router = new PolyRouter(3, 2, 4, CPU);
        using (no_grad()) router.Logits.normal_(0, 1);
        var ids = tensor(new long[] { 1, 2 });
        manual_seed(9);
        var sampled = router.Weights(ids, sample: true);
        manual_seed(9);
        var logits = router.Logits.detach().index_select(0, ids).view(-1, 2, 4);
        var u = rand_like(logits).clamp(1.1920929e-07, 1 - 1.1920929e-07);
        var z = sigmoid((logits + u.log() - (1 - u).log()) / 1.0);
        Numerics.Close(z / z.sum(-1, keepdim: true), sampled, 1e-6, "relaxed Bernoulli");
        Numerics.Close(ones(2, 2), sampled.sum(-1), 1e-6, "sums");
    }

    [Fact]
    public void Missing_or_unknown_task_ids_are_refused_clearly()
    {
        using var scope = NewDisposeScope();
        var (layer, routing) = Layer(2);
        var x = randn(2, 3, 8);
        var e = Assert.Throws<ArgumentException>(() => layer.call(x));
        Assert.Contains("task id", e.Message);
        using (routing.Use(tensor(new long[] { 0, 3 })))
            Assert.Contains("n_tasks=3", Assert.Throws<ArgumentException>(() => layer.call(x)).Message);
        using (routing.Use(tensor(new long[] { 0, 1, 2 })))
            Assert.Contains("one task id per row", Assert.Throws<ArgumentException>(() => layer.call(x)).Message);
    }

    [Fact]
    public void Saved_file_has_peft_keys_shapes_and_config()
    {
        using var scope = NewDisposeScope();
        var fx = new AdapterFixture("llama-lora-qv");
        var pm = PeftModel.Create(fx.LoadBase(), new PolyConfig { R = 4, NTasks = 5, NSkills = 3, NSplits = 2, TargetModules = QV });
        var dir = Path.Combine(IO.SafetensorsTests.TempDir(), "poly");
        pm.Save(dir);
        using var f = SafetensorsFile.Open(Path.Combine(dir, PeftModel.WeightsFile));
        var tensors = f.LoadAll();
        const string q = "base_model.model.model.layers.0.self_attn.q_proj.", v = "base_model.model.model.layers.1.self_attn.v_proj.";
        Assert.Equal([2, 3, 32, 4], tensors[q + "poly_lora_A"].shape);
        Assert.Equal([2, 3, 4, 32], tensors[q + "poly_lora_B"].shape);
        Assert.Equal([5, 6], tensors[q + "poly_router.module_logits"].shape);
        Assert.Equal([2, 3, 4, 16], tensors[v + "poly_lora_B"].shape);
        Assert.Equal(2 * 2 * 3, tensors.Count);
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "adapter_config.json")))!.AsObject();
        Assert.Equal("POLY", (string?)config["peft_type"]);
        Assert.Equal("poly", (string?)config["poly_type"]);
        Assert.Equal(5, (int?)config["n_tasks"]);
        Assert.Equal(3, (int?)config["n_skills"]);
        Assert.Equal(2, (int?)config["n_splits"]);
        Assert.Equal(4, (int?)config["r"]);
        Assert.True((bool?)config["init_weights"]);
        // PEFT's init: B zero, router logits within ±1e-3, A as nn.Linear(in/q, r) (bound 1/√(in/q)).
        Assert.Equal(0, tensors[q + "poly_lora_B"].abs().max().item<float>());
        Assert.True(tensors[q + "poly_router.module_logits"].abs().max().item<float>() <= 1e-3);
        Assert.True(tensors[q + "poly_lora_A"].abs().max().item<float>() <= 1 / Math.Sqrt(32));
    }

    [Fact]
    public void Rows_train_and_reload_with_their_tasks()
    {
        using var scope = NewDisposeScope();
        var fx = new AdapterFixture("llama-lora-qv");
        manual_seed(2);
        var pm = PeftModel.Create(fx.LoadBase(), new PolyConfig { R = 4, NTasks = 2, NSkills = 2, TargetModules = QV });
        pm.Base.train();
        var tasks = tensor(new long[] { 0, 1 });
        TrainingLoop.AssertLearns(pm, TrainingLoop.Batch(), steps: 6, lr: 5e-2, taskIds: tasks);
        pm.Base.eval();
        var dir = Path.Combine(IO.SafetensorsTests.TempDir(), "poly");
        pm.Save(dir);
        var back = PeftModel.FromPretrained(fx.LoadBase(), dir);
        using var _ = no_grad();
        var inputs = ModelInputs.Ids(TrainingLoop.Batch(seed: 4)) with { TaskIds = tasks };
        Numerics.Close(pm.Forward(inputs), back.Forward(inputs), 1e-6, "reloaded");
    }
}
