using System.Text.RegularExpressions;
using PeftSharp.Models;
using TorchSharp.Modules;

namespace PeftSharp.Training.Layerwise;

/// <summary>
/// A model's parameters split into its repeated decoder (or encoder) blocks and the rest (embeddings, final norm, head).
/// Blocks are found by name, as transformers lays them out: <c>model.layers.N.</c> (Llama), <c>transformer.h.N.</c>
/// (GPT-2), <c>bert.encoder.layer.N.</c> (BERT). Tied weights appear once.
/// </summary>
public sealed partial class DecoderBlocks
{
    [GeneratedRegex(@"\.(layers|h|layer)\.(\d+)\.")]
    private static partial Regex BlockName();

    /// <summary>Every distinct parameter, in the model's order: what a full-parameter run hands the optimizer.</summary>
    public IReadOnlyList<(string Name, Parameter P)> All { get; }
    /// <summary>Parameters outside the blocks.</summary>
    public IReadOnlyList<(string Name, Parameter P)> Outside { get; }
    /// <summary><c>Blocks[i]</c>: the parameters of block i.</summary>
    public IReadOnlyList<IReadOnlyList<(string Name, Parameter P)>> Blocks { get; }

    public DecoderBlocks(PretrainedModel model)
    {
        var seen = new HashSet<IntPtr>();
        var all = model.named_parameters().Where(p => seen.Add(p.parameter.Handle)).Select(p => (p.name, p.parameter)).ToList();
        var blocks = new SortedDictionary<int, List<(string, Parameter)>>();
        var outside = new List<(string, Parameter)>();
        foreach (var (name, p) in all)
        {
            var m = BlockName().Match(name);
            if (!m.Success) { outside.Add((name, p)); continue; }
            var i = int.Parse(m.Groups[2].Value);
            if (!blocks.TryGetValue(i, out var list)) blocks[i] = list = [];
            list.Add((name, p));
        }
        if (blocks.Count == 0)
            throw new NotSupportedException($"{model.Config.Architecture}: no repeated blocks (named '*.layers.N.*', '*.h.N.*' or '*.layer.N.*') to train layer by layer");
        (All, Outside, Blocks) = (all, outside, blocks.Values.ToList());
    }

    /// <summary>Sets <c>requires_grad</c> on every parameter: true for those <paramref name="trainable"/> names, false otherwise.</summary>
    public void SetTrainable(Func<string, bool> trainable)
    {
        foreach (var (name, p) in All) p.requires_grad = trainable(name);
    }
}
