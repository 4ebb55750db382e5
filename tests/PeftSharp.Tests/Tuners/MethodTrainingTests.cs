using PeftSharp.Models;
using PeftSharp.Peft;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tuners;

/// <summary>Training helpers for method tests on tiny-llama (every method's own training check is in MethodContractTests).</summary>
public static class MethodTrainingTests
{
    /// <summary>Runs <paramref name="steps"/> Adam steps on the causal LM loss of <paramref name="inputs"/>; returns each step's loss.</summary>
    internal static List<double> Train(PeftModel pm, ModelInputs inputs, int steps, double lr, Action<PeftModel, int>? afterBackward = null,
        Func<PeftModel, Tensor>? extraLoss = null)
    {
        var labels = inputs.InputIds!.masked_fill(inputs.AttentionMask!.eq(0), Losses.IgnoreIndex);
        var parameters = pm.TrainableParameters().Select(p => p.P).ToList();
        Assert.NotEmpty(parameters);
        using var opt = optim.Adam(parameters, lr);
        pm.Base.train();
        var losses = new List<double>();
        for (int step = 0; step < steps; step++)
        {
            using var stepScope = NewDisposeScope();
            opt.zero_grad();
            var loss = Losses.CausalLM(pm.Forward(inputs), labels);
            losses.Add(loss.item<float>());
            if (extraLoss is not null) loss = loss + extraLoss(pm);
            loss.backward();
            opt.step();
            afterBackward?.Invoke(pm, step);
        }
        pm.Base.eval();
        return losses;
    }

    internal static Tensor BaseLogits()
    {
        using var f = IO_Open(Repo.Fixture("models", "tiny-llama", "expected.safetensors"));
        return f.Load("logits");
    }

    static PeftSharp.IO.SafetensorsFile IO_Open(string path) => PeftSharp.IO.SafetensorsFile.Open(path);
}
