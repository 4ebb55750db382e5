using System.Reflection;
using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace PeftSharp.Models;

/// <summary>
/// Finding and replacing sub-modules by their dotted path ("model.layers.0.self_attn.q_proj"), which is how
/// PEFT injects adapters: the wrapper takes the original's place under the same name.
/// </summary>
public static class ModuleTree
{
    static readonly FieldInfo Submodules =
        typeof(nn.Module).GetField("_internal_submodules", BindingFlags.Instance | BindingFlags.NonPublic)
        ?? throw new MissingFieldException("TorchSharp's Module._internal_submodules (TorchSharp version changed?)");

    public static nn.Module Get(nn.Module root, string path)
    {
        nn.Module m = root;
        if (path.Length == 0) return m;
        foreach (var part in path.Split('.'))
        {
            var child = m.named_children().FirstOrDefault(c => c.name == part).module
                ?? throw new KeyNotFoundException($"module '{path}' not found (no child '{part}')");
            m = child;
        }
        return m;
    }

    /// <summary>Puts <paramref name="replacement"/> where <paramref name="path"/> was, in the parent's field and registry.</summary>
    public static void Replace(nn.Module root, string path, nn.Module replacement)
    {
        int dot = path.LastIndexOf('.');
        var parent = dot < 0 ? root : Get(root, path[..dot]);
        var name = dot < 0 ? path : path[(dot + 1)..];
        var dict = Submodules.GetValue(parent)!;
        var containsKey = dict.GetType().GetMethod("ContainsKey")!;
        if (!(bool)containsKey.Invoke(dict, [name])!)
            throw new KeyNotFoundException($"module '{path}' not found");
        var field = FindField(parent.GetType(), name);
        if (field is not null)
        {
            if (!field.FieldType.IsInstanceOfType(replacement))
                throw new InvalidOperationException($"cannot put a {replacement.GetType().Name} in field {parent.GetType().Name}.{name} of type {field.FieldType.Name}");
            field.SetValue(parent, replacement);
        }
        else if (parent is not TorchSharp.Modules.ModuleList<nn.Module<Tensor, Tensor>>)
            throw new InvalidOperationException($"{parent.GetType().Name} keeps '{name}' in no field we can replace");
        dict.GetType().GetMethod("set_Item", [typeof(string), typeof(nn.Module)])!.Invoke(dict, [name, replacement]);
    }

    static FieldInfo? FindField(Type? t, string name)
    {
        for (; t is not null; t = t.BaseType)
        {
            var f = t.GetField(name, BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.DeclaredOnly);
            if (f is not null) return f;
        }
        return null;
    }

    /// <summary>Every module with its dotted path, depth first (the root has path "").</summary>
    public static IEnumerable<(string Path, nn.Module Module)> Walk(nn.Module root, string prefix = "")
    {
        yield return (prefix, root);
        foreach (var (name, child) in root.named_children())
            foreach (var x in Walk(child, prefix.Length == 0 ? name : $"{prefix}.{name}"))
                yield return x;
    }
}
