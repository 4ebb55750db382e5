using System.Reflection;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Tuners;

/// <summary>
/// Adding and removing per-adapter modules of a <see cref="ModuleDict{T}"/> so that the model sees them. TorchSharp's
/// ModuleDict registers its items once, when its owner registers its components: an item added later is reachable
/// through the dict but missing from the model's parameters(), state_dict() and to(device).
/// </summary>
public static class AdapterModules
{
    static readonly FieldInfo Submodules =
        typeof(nn.Module).GetField("_internal_submodules", BindingFlags.Instance | BindingFlags.NonPublic)
        ?? throw new MissingFieldException("TorchSharp's Module._internal_submodules (TorchSharp version changed?)");

    public static void Add<T>(ModuleDict<T> dict, string name, T module) where T : nn.Module
    {
        dict.Add(name, module);
        if (!dict.named_children().Any(c => c.name == name)) dict.register_module(name, module);
    }

    public static void Remove<T>(ModuleDict<T> dict, string name) where T : nn.Module
    {
        dict.Remove(name);
        var registry = Submodules.GetValue(dict)!;
        registry.GetType().GetMethod("Remove", [typeof(string)])!.Invoke(registry, [name]);
    }
}
