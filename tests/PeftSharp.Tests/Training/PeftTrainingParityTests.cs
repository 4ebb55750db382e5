using System.Text.Json;
using PeftSharp.Data;
using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Training;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Training;

/// <summary>LoRA training on tiny-llama step for step against the PEFT + torch.optim.AdamW trace.</summary>
public class PeftTrainingParityTests
{
    /// <param name="chunkTokens">tokens per chunk of the fused head + loss (0: automatic, one chunk here).</param>
    [Theory]
    [InlineData("llama-lora-qv", 0)]
    [InlineData("llama-lora-qv", 5)]
    [InlineData("llama-lora-all-accum-clip", 0)]
    [InlineData("llama-lora-all-accum-clip", 13)]
    [InlineData("llama-lora-all-accum-clip", 13, true)]
    public void Losses_learning_rates_and_final_adapter_match_pytorch(string name, long chunkTokens, bool gradientCheckpointing = false)
    {
        var dir = Repo.Fixture("training", name);
        var trace = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "trace.json"))).RootElement;
        var c = trace.GetProperty("config");
        var pm = PeftModel.FromPretrained(AutoModel.Load(Repo.Fixture("models", "tiny-llama")), Path.Combine(dir, "adapter_step0"), isTrainable: true);
        pm.Base.GradientCheckpointing = gradientCheckpointing;
        using var data = SafetensorsFile.Open(Path.Combine(dir, "data.safetensors"));
        var train = BatchSource.FromInputIds(data.Load("input_ids"));
        var options = new TrainingOptions
        {
            LearningRate = c.GetProperty("lr").GetDouble(),
            PerDeviceTrainBatchSize = c.GetProperty("batch_size").GetInt32(),
            GradientAccumulationSteps = c.GetProperty("grad_accum").GetInt32(),
            NumTrainEpochs = c.GetProperty("epochs").GetInt32(),
            WarmupSteps = c.GetProperty("warmup_steps").GetInt32(),
            WarmupRatio = 0,
            LrSchedulerType = "linear",
            WeightDecay = c.GetProperty("weight_decay").GetDouble(),
            MaxGradNorm = c.GetProperty("max_grad_norm").GetDouble(),
            Shuffle = false,
            OutputDir = null,
            LoggingSteps = 0,
        };
        Assert.NotNull(pm.HiddenAndHead(ModelInputs.Ids(ones(1, 4, ScalarType.Int64)))); // the run takes the fused path
        var result = Trainer.Run(Objectives.ForPeft(pm, chunkTokens: chunkTokens), train, null, options, new TrainerHooks { HandleCtrlC = false });

        var losses = trace.GetProperty("losses").EnumerateArray().Select(x => x.GetDouble()).ToArray();
        var lrs = trace.GetProperty("lrs").EnumerateArray().Select(x => x.GetDouble()).ToArray();
        Assert.Equal(losses.Length, result.Steps.Count);
        for (int i = 0; i < losses.Length; i++)
        {
            Assert.True(Math.Abs(result.Steps[i].Loss - losses[i]) <= 1e-4 * Math.Abs(losses[i]), $"step {i}: loss {result.Steps[i].Loss} vs {losses[i]}");
            Assert.Equal(lrs[i], result.Steps[i].LearningRate, 12);
        }
        using var final = SafetensorsFile.Open(Path.Combine(dir, "adapter_final", PeftModel.WeightsFile));
        var ours = pm.AdapterStateDict("default");
        foreach (var key in final.Names) Numerics.Close(final.Load(key), ours[key], 1e-4, key);
    }
}
