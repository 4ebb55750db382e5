using System.Text.Json;
using static TorchSharp.torch;

namespace PeftSharp.IO;

/// <summary>Parses and validates a safetensors JSON header against the size of the data section.</summary>
internal static class SafetensorsHeader
{
    static readonly System.Text.UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    public static (Dictionary<string, TensorInfo> Tensors, Dictionary<string, string> Metadata) Parse(
        string path, byte[] header, long dataLength)
    {
        try { StrictUtf8.GetCharCount(header); }
        catch (System.Text.DecoderFallbackException) { throw new SafetensorsException(path, "header is not valid UTF-8"); }
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(header, new JsonDocumentOptions { MaxDepth = 8 });
        }
        catch (JsonException e)
        {
            throw new SafetensorsException(path, $"header is not valid JSON ({e.Message})");
        }
        using var _ = doc;
        if (doc.RootElement.ValueKind != JsonValueKind.Object)
            throw new SafetensorsException(path, "header is not a JSON object");

        var tensors = new Dictionary<string, TensorInfo>();
        var metadata = new Dictionary<string, string>();
        bool sawMetadata = false;
        foreach (var prop in doc.RootElement.EnumerateObject())
        {
            if (prop.Name == "__metadata__")
            {
                if (sawMetadata) throw new SafetensorsException(path, "__metadata__ appears twice in the header");
                sawMetadata = true;
                ParseMetadata(path, prop.Value, metadata);
                continue;
            }
            if (tensors.ContainsKey(prop.Name))
                throw new SafetensorsException(path, $"tensor '{prop.Name}' appears twice in the header");
            tensors[prop.Name] = ParseTensor(path, prop.Name, prop.Value, dataLength);
        }
        CheckLayout(path, tensors.Values, dataLength);
        return (tensors, metadata);
    }

    static void ParseMetadata(string path, JsonElement value, Dictionary<string, string> metadata)
    {
        if (value.ValueKind != JsonValueKind.Object)
            throw new SafetensorsException(path, "__metadata__ must be an object of strings");
        foreach (var m in value.EnumerateObject())
        {
            if (m.Value.ValueKind != JsonValueKind.String)
                throw new SafetensorsException(path, $"__metadata__ value '{m.Name}' is not a string");
            if (metadata.ContainsKey(m.Name))
                throw new SafetensorsException(path, $"__metadata__ key '{m.Name}' appears twice");
            metadata[m.Name] = m.Value.GetString()!;
        }
    }

    static TensorInfo ParseTensor(string path, string name, JsonElement value, long dataLength)
    {
        if (value.ValueKind != JsonValueKind.Object)
            throw new SafetensorsException(path, $"tensor '{name}': entry is not an object");
        // JSON readers disagree on which of two equal keys wins; the reference implementation refuses them, so do we.
        var fields = new HashSet<string>();
        foreach (var field in value.EnumerateObject())
            if (!fields.Add(field.Name))
                throw new SafetensorsException(path, $"tensor '{name}': field '{field.Name}' appears twice");
        if (!value.TryGetProperty("dtype", out var dt) || dt.ValueKind != JsonValueKind.String)
            throw new SafetensorsException(path, $"tensor '{name}': missing dtype");
        var dtypeName = dt.GetString()!;
        if (!SafetensorsDType.TryParse(dtypeName, out var dtype, out var elemSize))
            throw new SafetensorsException(path,
                $"tensor '{name}': unknown dtype '{dtypeName}' (supported: {string.Join(", ", SafetensorsDType.Names)})");
        if (!value.TryGetProperty("shape", out var sh) || sh.ValueKind != JsonValueKind.Array)
            throw new SafetensorsException(path, $"tensor '{name}': missing shape");
        var shape = new long[sh.GetArrayLength()];
        int i = 0;
        long numel = 1;
        foreach (var d in sh.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out var n) || n < 0)
                throw new SafetensorsException(path, $"tensor '{name}': shape entry {d} is not a non-negative integer");
            shape[i++] = n;
            try { numel = checked(numel * n); }
            catch (OverflowException) { throw new SafetensorsException(path, $"tensor '{name}': shape [{string.Join(",", shape)}] overflows"); }
        }
        if (!value.TryGetProperty("data_offsets", out var off) || off.ValueKind != JsonValueKind.Array || off.GetArrayLength() != 2)
            throw new SafetensorsException(path, $"tensor '{name}': data_offsets must be [begin, end]");
        if (off[0].ValueKind != JsonValueKind.Number || off[1].ValueKind != JsonValueKind.Number ||
            !off[0].TryGetInt64(out var begin) || !off[1].TryGetInt64(out var end) || begin < 0 || end < begin)
            throw new SafetensorsException(path, $"tensor '{name}': data_offsets [{off[0]}, {off[1]}] are invalid");
        if (end > dataLength)
            throw new SafetensorsException(path, $"tensor '{name}': data_offsets end {end} is past the data section ({dataLength} bytes)");
        long expected;
        try { expected = checked(numel * elemSize); }
        catch (OverflowException) { throw new SafetensorsException(path, $"tensor '{name}': byte size overflows"); }
        if (end - begin != expected)
            throw new SafetensorsException(path,
                $"tensor '{name}': {end - begin} bytes stored but shape [{string.Join(",", shape)}] x {dtypeName} needs {expected}");
        return new TensorInfo(name, dtype, shape, begin, end);
    }

    // As in the reference implementation: tensors tile the data section exactly, without gaps or overlaps.
    static void CheckLayout(string path, IEnumerable<TensorInfo> infos, long dataLength)
    {
        long cursor = 0;
        foreach (var t in infos.OrderBy(t => t.Begin).ThenBy(t => t.End))
        {
            if (t.Begin < cursor)
                throw new SafetensorsException(path, $"tensor '{t.Name}' overlaps the tensor stored before it");
            if (t.Begin > cursor)
                throw new SafetensorsException(path, $"gap of {t.Begin - cursor} bytes before tensor '{t.Name}'");
            cursor = t.End;
        }
        if (cursor != dataLength)
            throw new SafetensorsException(path, $"{dataLength - cursor} trailing bytes after the last tensor");
    }
}
