using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tuners.PromptLearning;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tuners;

/// <summary>A few plain Adam steps on one batch, to see that an adapter's parameters receive useful gradients.</summary>
internal static class TrainingLoop
{
    /// <summary>Random token rows [2, 16] from a fixed seed (ids 2.. so no pad/bos).</summary>
    public static Tensor Batch(int vocab = 512, long seed = 1) =>
        randint(2, vocab, [2, 16], generator: new Generator((ulong)seed));

    /// <param name="virtualPositions">leading logits positions that belong to virtual tokens (prompt tuning, P-tuning).</param>
    /// <returns>The loss before each step.</returns>
    /// <param name="taskIds">each row's task, for methods that route by task (Poly).</param>
    public static List<double> Run(PeftModel pm, Tensor ids, int steps = 6, double lr = 1e-2, int virtualPositions = 0, Tensor? taskIds = null)
    {
        var trainable = pm.TrainableParameters().Select(x => x.P).ToList();
        Assert.NotEmpty(trainable);
        using var opt = optim.Adam(trainable, lr);
        var labels = virtualPositions > 0 ? VirtualTokens.PadLabels(ids, virtualPositions) : ids;
        var losses = new List<double>();
        for (int i = 0; i < steps; i++)
        {
            using var scope = NewDisposeScope();
            opt.zero_grad();
            var loss = Losses.CausalLM(pm.Forward(ModelInputs.Ids(ids) with { TaskIds = taskIds }), labels);
            loss.backward();
            opt.step();
            losses.Add(loss.item<float>());
        }
        return losses;
    }

    /// <summary>Asserts that training lowered the loss clearly and left the base weights alone.</summary>
    public static void AssertLearns(PeftModel pm, Tensor ids, int steps = 6, double lr = 1e-2, int virtualPositions = 0, Tensor? taskIds = null)
    {
        var frozen = pm.Base.named_parameters().Where(p => !p.parameter.requires_grad).Take(3)
            .Select(p => (p.name, p.parameter, Copy: p.parameter.detach().clone())).ToList();
        var losses = Run(pm, ids, steps, lr, virtualPositions, taskIds);
        Console.WriteLine("losses: " + string.Join(", ", losses.Select(l => l.ToString("F4"))));
        Assert.True(losses[^1] < losses[0] - 0.03, $"loss did not go down: {string.Join(", ", losses.Select(l => l.ToString("F4")))}");
        foreach (var (name, p, copy) in frozen) Assert.True(Numerics.Same(copy, p.detach()), $"frozen '{name}' changed");
    }
}
