using TorchSharp.Modules;

namespace PeftSharp.Training;

/// <summary>
/// LoRA+ (Hayou et al., "LoRA+: Efficient Low Rank Adaptation of Large Models", arXiv 2402.12354): B learns
/// <c>loraplus_lr_ratio</c> times faster than A, since at width n the two factors need rates of different orders
/// (eta_B / eta_A = Theta(n)). The parameter groups are PEFT's <c>create_loraplus_optimizer</c> (with its fix of
/// 2026-08, which routes embedding factors to their own group):
/// <code>
/// embedding LoRA factors                  lr_embedding   decay
/// lora_B, or any 1-D parameter:  decayed  lr * ratio     decay
///                                exempt   lr * ratio     0       (biases, LayerNorm parameters)
/// everything else (lora_A, ...)           lr             decay
/// </code>
/// The rates follow the schedule: each group's rate is its base rate times the schedule's factor, as torch's schedulers
/// scale every group. Runs on AdamW (fused when the model's set of parameters is fixed): the state file is AdamW's.
/// </summary>
public static class LoraPlus
{
    public enum Group { A, Embedding, B, BNoDecay }

    /// <summary>The group PEFT puts parameter <paramref name="name"/> in.</summary>
    public static Group GroupOf(string name, Parameter p, IReadOnlySet<string> embeddingFactors, IReadOnlySet<string> noDecay) =>
        embeddingFactors.Contains(name) ? Group.Embedding
        : name.Contains("lora_B", StringComparison.Ordinal) || p.dim() == 1 ? (noDecay.Contains(name) ? Group.BNoDecay : Group.B)
        : Group.A;

    /// <summary>Each parameter's rate factor and decay, for <see cref="AdamW"/> and <see cref="FusedAdamW"/>.</summary>
    /// <param name="lrRatio">eta_B / eta_A.</param>
    /// <param name="lrEmbedding">the embedding factors' base rate (absolute, as PEFT's <c>loraplus_lr_embedding</c>).</param>
    /// <param name="baseLr">the run's learning rate, against which <paramref name="lrEmbedding"/> becomes a factor.</param>
    public static Func<string, ParamSettings> Settings(TrainableModel model, double lrRatio, double lrEmbedding, double baseLr, double weightDecay)
    {
        var embedding = model.LowRankFactors.Where(f => f.Embedding).SelectMany(f => new[] { f.A, f.B }).ToHashSet();
        var byName = model.Parameters.ToDictionary(p => p.Name, p => GroupOf(p.Name, p.P, embedding, model.NoDecay));
        var a = new ParamSettings(1, weightDecay);
        var e = new ParamSettings(lrEmbedding / baseLr, weightDecay);
        var b = new ParamSettings(lrRatio, weightDecay);
        var bNoDecay = new ParamSettings(lrRatio, 0);
        return name => byName.GetValueOrDefault(name) switch
        {
            Group.Embedding => e,
            Group.B => b,
            Group.BNoDecay => bNoDecay,
            _ => a,
        };
    }
}
