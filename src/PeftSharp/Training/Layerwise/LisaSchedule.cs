using PeftSharp.Data;
using PeftSharp.Models;
using TorchSharp.Modules;

namespace PeftSharp.Training.Layerwise;

/// <summary>
/// LISA, Layerwise Importance Sampled AdamW (Pan et al., 2024, https://arxiv.org/abs/2403.17919): full-parameter
/// fine-tuning where, in each period of <c>K</c> steps, only the embeddings, the head (everything outside the blocks)
/// and <c>γ</c> uniformly sampled blocks train; the other blocks are frozen and keep no optimizer state, so AdamW's
/// memory follows the <c>γ</c> active blocks rather than all <c>N_L</c>:
/// <code>
/// every K steps:  active ~ Uniform subset of {0..N_L-1} of size γ;   requires_grad(block i) = i ∈ active
/// </code>
/// The draw of round <c>r = step / K</c> depends only on the seed and <c>r</c>.
/// </summary>
public sealed class LisaSchedule
{
    readonly DecoderBlocks blocks;
    readonly int activeLayers, interval;
    readonly long seed;
    int round = -1;

    public LisaSchedule(PretrainedModel model, int activeLayers, int interval, long seed)
    {
        blocks = new DecoderBlocks(model);
        if (activeLayers < 1 || activeLayers > blocks.Blocks.Count)
            throw new ArgumentException($"option lisa_active_layers is {activeLayers} but {model.Config.Architecture} has {blocks.Blocks.Count} layers: pick 1 to {blocks.Blocks.Count}");
        if (interval < 1) throw new ArgumentException($"option lisa_interval is {interval}: it must be at least 1");
        (this.activeLayers, this.interval, this.seed) = (activeLayers, interval, seed);
        Apply(0);
    }

    /// <summary>Every parameter of the model: the optimizer skips the frozen ones (they get no gradient).</summary>
    public IReadOnlyList<(string Name, Parameter P)> Parameters => blocks.All;

    /// <summary>The blocks training now, ascending.</summary>
    public IReadOnlyList<int> Active { get; private set; } = [];

    /// <summary>Makes the draw of the round that <paramref name="step"/> (0-based steps done) falls in the trainable set.</summary>
    public void Apply(int step)
    {
        var r = step / interval;
        if (r == round) return;
        round = r;
        var order = Enumerable.Range(0, blocks.Blocks.Count).ToArray();
        SeededRandom.Shuffle(order, SeededRandom.Mix(seed, r));
        Active = order.Take(activeLayers).Order().ToList();
        var trainable = blocks.Outside.Select(p => p.Name).Concat(Active.SelectMany(i => blocks.Blocks[i]).Select(p => p.Name)).ToHashSet();
        blocks.SetTrainable(trainable.Contains);
    }

    public override string ToString() =>
        $"LISA: {activeLayers} of {blocks.Blocks.Count} layers (now {string.Join(", ", Active)}) plus embeddings and head, re-sampled every {interval} steps";
}
