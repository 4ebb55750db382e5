using PeftSharp.Data;
using PeftSharp.Models;
using PeftSharp.Peft;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Training;

/// <summary>What a model is trained to minimise, and the glue from a <see cref="PeftModel"/> to the trainer.</summary>
public static class Objectives
{
    /// <summary>
    /// Mean next-token cross-entropy over labelled tokens (labels are shifted inside, as transformers does). Where the model's
    /// head is a plain linear layer the head and the loss run fused, <paramref name="chunkTokens"/> tokens at a time
    /// (0: automatic), so that the [B, T, vocab] logits are never materialised.
    /// </summary>
    public static Tensor CausalLM(ILanguageModel model, Batch b, long chunkTokens = 0)
    {
        using var scope = NewDisposeScope();
        var dev = model.Device;
        var inputs = new ModelInputs
        {
            InputIds = b.InputIds.to(dev),
            // Without padding there is no mask to send: the model then runs plain causal attention (flash kernels on a
            // GPU) and never has to look at the mask's values, which would wait for the GPU.
            AttentionMask = b.Tokens < b.InputIds.numel() ? b.AttentionMask.to(dev) : null,
            PositionIds = b.PositionIds?.to(dev),
            SegmentIds = b.SegmentIds?.to(dev),
            TaskIds = b.TaskIds?.to(dev),
        };
        var labels = (b.Labels ?? b.InputIds).to(dev);
        if (model.HiddenAndHead(inputs) is (var hidden, var head))
            return Losses.CausalLMFused(hidden, head.weight!, head.bias, labels, chunkTokens).MoveToOuterDisposeScope();
        var logits = model.Forward(inputs);
        // Prompt-learning methods prepend virtual tokens to the logits; they predict nothing (PEFT pads with -100 too).
        long virtualTokens = logits.shape[1] - labels.shape[1];
        if (virtualTokens > 0)
            labels = cat([full(labels.shape[0], virtualTokens, Losses.IgnoreIndex, ScalarType.Int64, device: dev), labels], 1);
        return Losses.CausalLM(logits, labels).MoveToOuterDisposeScope();
    }

    /// <summary>Cross-entropy of the classifier logits against the class labels.</summary>
    public static Tensor Classification(ILanguageModel model, Batch b)
    {
        using var scope = NewDisposeScope();
        var dev = model.Device;
        var logits = model.Forward(ModelInputs.Ids(b.InputIds.to(dev), b.AttentionMask.to(dev)) with { TaskIds = b.TaskIds?.to(dev) });
        var labels = (b.ClassLabels ?? throw new InvalidOperationException("a classification batch needs class labels")).to(dev);
        return nn.functional.cross_entropy(logits.to(ScalarType.Float32), labels).MoveToOuterDisposeScope();
    }

    /// <summary>The trainer's view of a PEFT model: its trainable parameters, its loss and how to save it.</summary>
    /// <param name="chunkTokens">tokens per chunk of the fused causal-LM loss (0: automatic).</param>
    public static TrainableModel ForPeft(PeftModel model, string task = "causal_lm", long chunkTokens = 0) =>
        new(model.TrainableParameters(),
            task == "seq_cls" ? b => Classification(model, b) : b => CausalLM(model, b, chunkTokens),
            dir => model.Save(dir))
        {
            SetTrainingMode = training => model.Base.train(training),
        };
}
