using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace PeftSharp.Merging;

/// <summary>
/// Relative depth of a tensor in [0, 1], the <c>t</c> at which mergekit evaluates gradients: layer i of L is at
/// <c>i / (L - 1)</c> (1 when L = 1); weights outside the layers, embeddings as well as the final norm and lm_head,
/// at 0 (mergekit plans them with t = 0 since its PR #534; before it, those after the layers were at 1).
/// LiNeS scales by <see cref="LinesOf"/>, which keeps the weights after the layers at 1.
/// </summary>
public sealed partial class LayerDepth
{
    readonly int layers;

    public LayerDepth(int layers) => this.layers = Math.Max(1, layers);

    public int Layers => layers;

    /// <summary>Layer count from config.json (num_hidden_layers, n_layer, num_layers), else from the tensor names.</summary>
    public static LayerDepth For(IEnumerable<string> tensorNames, string? configJsonPath)
    {
        if (configJsonPath is not null && File.Exists(configJsonPath))
        {
            var root = JsonNode.Parse(File.ReadAllText(configJsonPath)) as JsonObject;
            var config = root?["text_config"] as JsonObject ?? root;
            foreach (var key in new[] { "num_hidden_layers", "n_layer", "num_layers" })
                if (config?[key] is JsonValue v && v.TryGetValue<int>(out var n) && n > 0) return new LayerDepth(n);
        }
        int max = tensorNames.Select(LayerIndex).Max(i => i ?? -1);
        return new LayerDepth(max + 1);
    }

    /// <summary>The block index in names such as <c>model.layers.3.mlp</c>, <c>transformer.h.3.attn</c>, <c>encoder.layer.3</c>.</summary>
    public static int? LayerIndex(string tensorName)
    {
        var m = LayerPattern().Match(tensorName);
        return m.Success ? int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) : null;
    }

    /// <summary>The t at which gradients (lists of values) are read for this tensor.</summary>
    public double Of(string tensorName) => LayerIndex(tensorName) is int index ? OfLayer(index) : 0;

    /// <summary>
    /// The depth LiNeS scales by: as <see cref="Of"/> within the layers, 0 for the embeddings, 1 for what follows the
    /// layers (final norm, head), which LiNeS treats as the deepest part of the network.
    /// </summary>
    public double LinesOf(string tensorName) =>
        LayerIndex(tensorName) is int index ? OfLayer(index) : EmbeddingPattern().IsMatch(tensorName) ? 0 : 1;

    double OfLayer(int index) => layers > 1 ? Math.Clamp(index / (double)(layers - 1), 0, 1) : 1;

    /// <summary>The name with its block index replaced: <c>model.layers.3.mlp</c> -> <c>model.layers.7.mlp</c>.</summary>
    public static string WithLayerIndex(string tensorName, int index)
    {
        var g = LayerPattern().Match(tensorName).Groups[1];
        if (!g.Success) throw new ArgumentException($"'{tensorName}' is not inside a layer", nameof(tensorName));
        return string.Concat(tensorName.AsSpan(0, g.Index), index.ToString(System.Globalization.CultureInfo.InvariantCulture), tensorName.AsSpan(g.Index + g.Length));
    }

    /// <summary>Weights before the layers (embeddings), as opposed to those after them (final norm, head).</summary>
    public static bool IsEmbedding(string tensorName) => EmbeddingPattern().IsMatch(tensorName);

    [GeneratedRegex(@"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)\.")]
    private static partial Regex LayerPattern();

    [GeneratedRegex(@"embed|(?:^|\.)(?:wte|wpe)\.")]
    private static partial Regex EmbeddingPattern();
}
