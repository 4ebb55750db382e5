using PeftSharp.Data;
using PeftSharp.Models;
using TorchSharp.Modules;

namespace PeftSharp.Training.Layerwise;

/// <summary>
/// HFT, Half Fine-Tuning (Hui et al., 2024, https://arxiv.org/abs/2404.18466): in each round of <c>K</c> steps, every
/// block freezes a random half of its attention matrices and a random half of its MLP matrices (an odd count rounds
/// up or down at random, so three MLP matrices freeze one or two); the rest of the model trains. Freezing half of the
/// parameters keeps part of the pre-trained knowledge untouched each round, which the paper finds reduces forgetting:
/// <code>
/// every K steps, per block b:  F_b = half(attn_b) ∪ half(mlp_b);   requires_grad(θ) = θ ∉ ∪_b F_b
/// </code>
/// A "matrix" is a module with a weight of rank ≥ 2; its bias goes with it. Norms and everything outside the blocks
/// always train. The draw of round <c>r = step / K</c> depends only on the seed and <c>r</c>.
/// </summary>
public sealed class HftSchedule
{
    readonly DecoderBlocks blocks;
    // Per block: the attention modules and the MLP modules, each a list of parameter names.
    readonly List<(List<string[]> Attention, List<string[]> Mlp)> units;
    readonly int interval;
    readonly long seed;
    int round = -1;

    public HftSchedule(PretrainedModel model, int interval, long seed)
    {
        blocks = new DecoderBlocks(model);
        if (interval < 1) throw new ArgumentException($"option lisa_interval is {interval}: it must be at least 1");
        (this.interval, this.seed) = (interval, seed);
        units = blocks.Blocks.Select(Units).ToList();
        Apply(0);
    }

    public IReadOnlyList<(string Name, Parameter P)> Parameters => blocks.All;

    /// <summary>Names of the parameters frozen this round.</summary>
    public IReadOnlySet<string> Frozen { get; private set; } = new HashSet<string>();

    public void Apply(int step)
    {
        var r = step / interval;
        if (r == round) return;
        round = r;
        var rng = SeededRandom.Mix(seed, r);
        var frozen = new HashSet<string>();
        foreach (var (attention, mlp) in units)
            foreach (var group in new[] { attention, mlp })
            {
                var shuffled = group.ToArray();
                SeededRandom.Shuffle(shuffled, SeededRandom.Next(ref rng));
                var n = group.Count / 2 + (group.Count % 2 == 1 && (SeededRandom.Next(ref rng) & 1) == 1 ? 1 : 0);
                foreach (var unit in shuffled.Take(n)) frozen.UnionWith(unit);
            }
        Frozen = frozen;
        blocks.SetTrainable(name => !frozen.Contains(name));
    }

    /// <summary>A block's matrices grouped by module (weight and bias together), split into attention and the rest (MLP).</summary>
    static (List<string[]>, List<string[]>) Units(IReadOnlyList<(string Name, Parameter P)> block)
    {
        var modules = block.GroupBy(p => p.Name[..p.Name.LastIndexOf('.')])
            .Where(g => g.Any(p => p.P.dim() >= 2))
            .Select(g => (Module: g.Key, Names: g.Select(p => p.Name).ToArray()))
            .ToList();
        static bool IsAttention(string module) => module.Contains("attn") || module.Contains("attention");
        return (modules.Where(m => IsAttention(m.Module)).Select(m => m.Names).ToList(),
                modules.Where(m => !IsAttention(m.Module)).Select(m => m.Names).ToList());
    }

    public override string ToString() =>
        $"HFT: half of each layer's attention and MLP matrices frozen ({Frozen.Count} tensors now), re-drawn every {interval} steps";
}
