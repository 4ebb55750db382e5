using System.Text.Json;
using PeftSharp.Generation;
using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tests.Cli;
using PeftSharp.Tuners;
using PeftSharp.Tuners.Lora;
using PeftSharp.Tuners.Poly;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Mixtures;

/// <summary>
/// <c>generate --task-id N</c> and <c>logits --task-id N</c> on tinycode-3m with a Poly adapter whose skills (B random) and
/// routers (N(0, 2)) are perturbed, so that its three tasks give different models.
/// </summary>
public sealed class TaskIdCliTests
{
    static readonly Lazy<string> poly = new(() =>
    {
        using var scope = NewDisposeScope();
        var pm = PeftModel.Create(AutoModel.Load(CliRun.TinyCode),
            new PolyConfig { R = 4, NTasks = 3, NSkills = 3, InitWeights = false, TargetModules = ModuleSelector.Of("q_proj", "v_proj") });
        using (no_grad())
            foreach (var (_, layer) in pm.TunerLayers())
                foreach (var (key, t) in layer.StateDict("default"))
                    if (key.Contains("router")) t.normal_(0, 2);
                    else t.mul_(4);
        var dir = Path.Combine(IO.SafetensorsTests.TempDir(), "poly");
        pm.Save(dir);
        return dir;
    });

    static readonly int[] Prompt = [5, 17, 42, 9];

    [Fact]
    public void Generate_with_task_id_is_the_librarys_greedy_generation_under_that_tasks_routing()
    {
        var config = ModelConfig.Load(CliRun.TinyCode);
        var pm = PeftModel.FromPretrained(AutoModel.Load(CliRun.TinyCode), poly.Value);
        var options = new GenerationOptions { MaxNewTokens = 12, EosTokenIds = config.EosTokenIds, PadTokenId = config.PadTokenId };
        var generated = new List<int[]>();
        foreach (var task in new[] { 0, 2 })
        {
            var r = CliRun.Run("generate", "--model", CliRun.TinyCode, "--adapter", poly.Value, "--prompt-ids", string.Join(",", Prompt),
                "--max-new-tokens", "12", "--task-id", task.ToString(), "--json");
            Assert.True(r.Code == 0, r.Err);
            var ids = JsonDocument.Parse(r.Out).RootElement.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
            int[] expected;
            using (var t = tensor(new long[] { task }))
            using (pm.Routing.Use(t))
                expected = TextGenerator.Generate(pm, [Prompt], options)[0];
            Assert.Equal(expected, ids);
            generated.Add(ids);
        }
        Assert.NotEqual(generated[0], generated[1]);                           // else the test could not tell the tasks apart
    }

    [Fact]
    public void Logits_with_task_id_are_the_librarys_forward_and_differ_between_tasks()
    {
        var dir = IO.SafetensorsTests.TempDir();
        var inputs = Path.Combine(dir, "inputs.safetensors");
        using (var ids = tensor(new long[] { 5, 17, 42, 9, 3, 8, 11, 2 }, [2, 4]))
            SafetensorsWriter.Save(inputs, new Dictionary<string, Tensor> { ["input_ids"] = ids }, new Dictionary<string, string> { ["format"] = "pt" });
        var pm = PeftModel.FromPretrained(AutoModel.Load(CliRun.TinyCode), poly.Value);
        var logits = new List<Tensor>();
        using var scope = NewDisposeScope();
        foreach (var task in new[] { 1, 2 })
        {
            var output = Path.Combine(dir, $"task{task}.safetensors");
            var r = CliRun.Run("logits", "--model", CliRun.TinyCode, "--adapter", poly.Value, "--inputs", inputs, "--out", output, "--task-id", task.ToString());
            Assert.True(r.Code == 0, r.Err);
            using var f = SafetensorsFile.Open(output);
            var actual = f.Load("logits");
            using var _ = no_grad();
            var expected = pm.Forward(ModelInputs.Ids(tensor(new long[] { 5, 17, 42, 9, 3, 8, 11, 2 }, [2, 4])) with { TaskIds = tensor(new long[] { task, task }) });
            Numerics.Close(expected, actual, 1e-6, $"task {task}");
            logits.Add(actual);
        }
        Assert.True(Numerics.MaxAbsDiff(logits[0], logits[1]) > 1e-2, "tasks 1 and 2 route the same");
    }

    [Fact]
    public void A_task_id_out_of_range_names_n_tasks()
    {
        CliRun.Run("generate", "--model", CliRun.TinyCode, "--adapter", poly.Value, "--prompt-ids", "5,6", "--task-id", "3")
            .AssertError("--task-id 3", "n_tasks=3", "0 to 2");
        CliRun.Run("generate", "--model", CliRun.TinyCode, "--adapter", poly.Value, "--prompt-ids", "5,6", "--task-id", "-1")
            .AssertError("--task-id", "0 or more");
    }

    [Fact]
    public void A_poly_adapter_without_task_id_and_a_task_id_without_task_routing_are_named()
    {
        CliRun.Run("generate", "--model", CliRun.TinyCode, "--adapter", poly.Value, "--prompt-ids", "5,6")
            .AssertError("POLY", "--task-id", "0 to 2");
        string lora;
        using (NewDisposeScope())
        {
            var pm = PeftModel.Create(AutoModel.Load(CliRun.TinyCode), new LoraConfig { R = 2, TargetModules = ["q_proj"] });
            lora = Path.Combine(IO.SafetensorsTests.TempDir(), "lora");
            pm.Save(lora);
        }
        CliRun.Run("generate", "--model", CliRun.TinyCode, "--adapter", lora, "--prompt-ids", "5,6", "--task-id", "0")
            .AssertError("--task-id 0", "LORA", "does not route by task");
        CliRun.Run("generate", "--model", CliRun.TinyCode, "--prompt-ids", "5,6", "--task-id", "0").AssertError("--task-id", "--adapter");
    }
}
