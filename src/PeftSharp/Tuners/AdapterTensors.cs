using static TorchSharp.torch;

namespace PeftSharp.Tuners;

/// <summary>Loading a layer's saved adapter tensors, with errors that name the tensor, the shapes and the likely cause.</summary>
internal static class AdapterTensors
{
    /// <param name="targets">the layer's tensors under their saved names relative to the module (e.g. "ssf_scale").</param>
    public static void Load(IEnumerable<(string Key, Tensor Value)> targets, IReadOnlyDictionary<string, Tensor> tensors,
        string adapter, string modulePath, string source)
    {
        using var _ = no_grad();
        foreach (var (key, target) in targets.ToList())
        {
            if (!tensors.TryGetValue(key, out var t))
                throw new InvalidDataException($"{source}: missing tensor '{modulePath}.{key}' for adapter '{adapter}'");
            if (!t.shape.SequenceEqual(target.shape))
                throw new InvalidDataException($"{source}: tensor '{modulePath}.{key}' has shape [{string.Join(",", t.shape)}] but the layer " +
                    $"expects [{string.Join(",", target.shape)}]: is this adapter for another model, or does adapter_config.json differ from the one it was trained with?");
            target.copy_(t);
        }
    }
}
