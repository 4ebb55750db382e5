using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Tuners;

/// <summary>The one loader of saved adapter tensors: strict about stray, missing and mis-shaped tensors, for every method.</summary>
internal static class AdapterTensors
{
    /// <summary>
    /// Copies <paramref name="saved"/> (keys relative to the module, e.g. "hada_w1_a") into <paramref name="targets"/>.
    /// Every target must be present with its shape, and every saved key must have a target: a saved tensor the
    /// layer has no place for means the adapter was made with other settings (rank, decomposition, method).
    /// </summary>
    /// <param name="layerInfo">What the layer expects, for error messages (e.g. "in=64, out=32, r=4").</param>
    public static void CopyInto(IEnumerable<(string Key, Tensor Target)> targets, IReadOnlyDictionary<string, Tensor> saved,
        string modulePath, string adapter, string source, string layerInfo)
    {
        using var _ = no_grad();
        var expected = targets.ToList();
        var unknown = saved.Keys.Where(k => expected.All(e => e.Key != k)).ToList();
        if (unknown.Count > 0)
            throw new InvalidDataException($"{source}: tensor(s) {string.Join(", ", unknown.Select(k => $"'{modulePath}.{k}'"))} do not fit " +
                $"adapter '{adapter}' here, which has {string.Join(", ", expected.Select(e => e.Key))} ({layerInfo}): " +
                "was the adapter saved with other settings (rank, decomposition, init mode) than adapter_config.json says?");
        foreach (var (key, target) in expected)
        {
            if (!saved.TryGetValue(key, out var t))
                throw new InvalidDataException($"{source}: missing tensor '{modulePath}.{key}' for adapter '{adapter}'");
            if (!t.shape.SequenceEqual(target.shape))
                throw new InvalidDataException($"{source}: tensor '{modulePath}.{key}' has shape [{string.Join(",", t.shape)}] but the " +
                    $"layer expects [{string.Join(",", target.shape)}] ({layerInfo}): is this adapter for another model, " +
                    "or is r / rank_pattern in adapter_config.json wrong?");
            target.copy_(t);
        }
    }

    /// <summary>Shape as text, for messages.</summary>
    public static string Shape(Tensor t) => "[" + string.Join(",", t.shape) + "]";
}
