using System.Reflection;
using TorchSharp;
using static TorchSharp.torch;
using Module = TorchSharp.torch.nn.Module;

namespace PeftSharp.Tuners;

/// <summary>
/// Per-adapter sub-modules keyed by adapter name, like PyTorch's ModuleDict, so state-dict names read
/// <c>lora_A.default.weight</c>. TorchSharp's own ModuleDict does not register entries added after
/// construction (their parameters would be invisible to named_parameters() and to optimisers).
/// </summary>
public sealed class AdapterDict<T> : Module where T : Module
{
    static readonly FieldInfo Submodules =
        typeof(Module).GetField("_internal_submodules", BindingFlags.Instance | BindingFlags.NonPublic)!;

    readonly Dictionary<string, T> items = new();

    public AdapterDict() : base("AdapterDict") { }

    public T this[string name] => items.TryGetValue(name, out var m) ? m : throw new KeyNotFoundException($"no adapter '{name}' in this layer");
    public bool ContainsKey(string name) => items.ContainsKey(name);
    public bool TryGetValue(string name, out T value) => items.TryGetValue(name, out value!);
    public IReadOnlyCollection<string> Keys => items.Keys;
    public int Count => items.Count;

    public void Add(string name, T module)
    {
        if (items.ContainsKey(name)) throw new ArgumentException($"adapter '{name}' already exists");
        items[name] = module;
        register_module(name, module);
    }

    public bool Remove(string name)
    {
        if (!items.Remove(name)) return false;
        var dict = Submodules.GetValue(this)!;
        dict.GetType().GetMethod("Remove", [typeof(string)])!.Invoke(dict, [name]);
        return true;
    }
}
