using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.IO;

/// <summary>The dtype names of the safetensors format and their TorchSharp equivalents.</summary>
internal static class SafetensorsDType
{
    static readonly (string Name, ScalarType Type, int Size)[] Table =
    [
        ("F64", ScalarType.Float64, 8), ("F32", ScalarType.Float32, 4), ("F16", ScalarType.Float16, 2),
        ("BF16", ScalarType.BFloat16, 2), ("I64", ScalarType.Int64, 8), ("I32", ScalarType.Int32, 4),
        ("I16", ScalarType.Int16, 2), ("I8", ScalarType.Int8, 1), ("U8", ScalarType.Byte, 1),
        ("BOOL", ScalarType.Bool, 1),
    ];

    public static IEnumerable<string> Names => Table.Select(t => t.Name);

    public static bool TryParse(string name, out ScalarType type, out int size)
    {
        foreach (var t in Table)
            if (t.Name == name) { type = t.Type; size = t.Size; return true; }
        type = default; size = 0;
        return false;
    }

    public static string NameOf(ScalarType type)
    {
        foreach (var t in Table)
            if (t.Type == type) return t.Name;
        throw new NotSupportedException($"dtype {type} cannot be stored in safetensors");
    }

    public static int SizeOf(ScalarType type)
    {
        foreach (var t in Table)
            if (t.Type == type) return t.Size;
        throw new NotSupportedException($"dtype {type} cannot be stored in safetensors");
    }
}
