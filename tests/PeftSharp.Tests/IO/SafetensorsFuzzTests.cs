using System.Text;
using System.Text.Json.Nodes;
using PeftSharp.Models;
using PeftSharp.IO;
using static TorchSharp.torch;

namespace PeftSharp.Tests.IO;

/// <summary>
/// Hostile files: thousands of mutations of a valid file must each either load completely or fail with a
/// <see cref="SafetensorsException"/> naming the file: never another exception, a crash or a hang.
/// </summary>
public class SafetensorsFuzzTests
{
    [Fact]
    public void Mutated_files_fail_cleanly_or_load()
    {
        var dir = SafetensorsTests.TempDir();
        var valid = Path.Combine(dir, "valid.safetensors");
        SafetensorsWriter.Save(valid, new Dictionary<string, Tensor>
        {
            ["a"] = randn(3, 4), ["b"] = ones(5, dtype: ScalarType.Int64), ["c"] = zeros(2, 2, dtype: ScalarType.BFloat16), ["d"] = ones(3, dtype: ScalarType.Bool),
        }, new Dictionary<string, string> { ["format"] = "pt" });
        var original = File.ReadAllBytes(valid);
        int headerEnd = 8 + (int)BitConverter.ToUInt64(original, 0);
        var rng = new Random(1234);
        var path = Path.Combine(dir, "fuzz.safetensors");
        int loaded = 0, rejected = 0;
        for (int i = 0; i < 3000; i++)
        {
            var bytes = Mutate(original, headerEnd, rng);
            File.WriteAllBytes(path, bytes);
            try
            {
                using var f = SafetensorsFile.Open(path);
                foreach (var n in f.Names) f.Load(n).Dispose();
                loaded++;
            }
            catch (SafetensorsException e)
            {
                Assert.Contains("fuzz.safetensors", e.Message);
                rejected++;
            }
        }
        Assert.True(rejected > 1000, $"only {rejected} of 3000 mutations were rejected");
        Assert.True(loaded > 0, "no mutation loaded: the mutations only ever broke the file");
    }

    /// <summary>
    /// Structural mutations of the JSON header (a field repeated, dropped or given a value of another JSON type),
    /// loaded as a model as <c>inspect</c> and <c>logits</c> do: every error must name the file, whatever its type.
    /// </summary>
    [Fact]
    public void Structurally_mutated_headers_fail_naming_the_file()
    {
        var dir = SafetensorsTests.TempDir();
        var folder = IoTestFiles.ModelFolder(Path.Combine(dir, "m"));
        var path = Path.Combine(folder, Checkpoint.SingleFile);
        var original = File.ReadAllBytes(path);
        int headerEnd = 8 + (int)BitConverter.ToUInt64(original, 0);
        var header = JsonNode.Parse(Encoding.UTF8.GetString(original, 8, headerEnd - 8))!.AsObject();
        var names = header.Select(kv => kv.Key).Where(k => k != "__metadata__").ToList();
        var rng = new Random(99);
        int rejected = 0;
        for (int i = 0; i < 150; i++)
        {
            var text = MutateStructure(header, names[rng.Next(names.Count)], rng);
            var bytes = Encoding.UTF8.GetBytes(text);
            File.WriteAllBytes(path, [.. BitConverter.GetBytes((ulong)bytes.Length), .. bytes, .. original[headerEnd..]]);
            try { AutoModel.Load(folder).Dispose(); }
            catch (Exception e)
            {
                Assert.True(e.Message.Contains(path) && e is IOException or InvalidDataException, $"mutation {i}: {e.GetType().Name}: {e.Message}\n{text}");
                rejected++;
            }
        }
        Assert.True(rejected > 100, $"only {rejected} of 150 structural mutations were rejected");
    }

    static readonly JsonNode?[] OddValues =
        [null, JsonValue.Create("F32"), JsonValue.Create(-1), JsonValue.Create(1.5), JsonValue.Create(true), JsonValue.Create(1e300),
         JsonValue.Create(long.MaxValue), new JsonArray(), new JsonArray(JsonValue.Create("0"), JsonValue.Create(8)), new JsonObject()];

    static string MutateStructure(JsonObject header, string tensor, Random rng)
    {
        var copy = header.DeepClone().AsObject();
        var entry = copy[tensor]!.AsObject();
        string[] fields = ["dtype", "shape", "data_offsets"];
        var field = fields[rng.Next(fields.Length)];
        switch (rng.Next(5))
        {
            case 0: // a value of another JSON type
                entry[field] = OddValues[rng.Next(OddValues.Length)]?.DeepClone();
                return copy.ToJsonString();
            case 1: // one element of an array replaced
                if (entry[field] is JsonArray { Count: > 0 } a) a[rng.Next(a.Count)] = OddValues[rng.Next(OddValues.Length)]?.DeepClone();
                return copy.ToJsonString();
            case 2: // a field dropped
                entry.Remove(field);
                return copy.ToJsonString();
            case 3: // the whole entry replaced
                copy[tensor] = OddValues[rng.Next(OddValues.Length)]?.DeepClone();
                return copy.ToJsonString();
            default: // a field repeated, with the same or another value (JsonObject cannot hold that: edit the text)
            {
                var text = copy.ToJsonString();
                var key = $"\"{tensor}\":{{";
                var repeat = rng.Next(2) == 0 ? entry[field]!.ToJsonString() : "\"I32\"";
                return text.Replace(key, $"{key}\"{field}\":{repeat},");
            }
        }
    }

    static byte[] Mutate(byte[] original, int headerEnd, Random rng)
    {
        var b = (byte[])original.Clone();
        switch (rng.Next(6))
        {
            case 0: // flip bytes in the header
                for (int k = rng.Next(1, 4); k > 0; k--) b[8 + rng.Next(headerEnd - 8)] = (byte)rng.Next(256);
                return b;
            case 1: // a different header length
                BitConverter.GetBytes((ulong)rng.NextInt64(0, long.MaxValue >> rng.Next(64))).CopyTo(b, 0);
                return b;
            case 2: // truncated anywhere
                return b[..rng.Next(b.Length)];
            case 3: // digits in the header replaced by other numbers (offsets, shapes)
            {
                var header = Encoding.UTF8.GetString(b, 8, headerEnd - 8).ToCharArray();
                for (int k = 0; k < header.Length; k++)
                    if (char.IsDigit(header[k]) && rng.Next(8) == 0) header[k] = (char)('0' + rng.Next(10));
                Encoding.UTF8.GetBytes(header).CopyTo(b, 8);
                return b;
            }
            case 4: // dtype names swapped
            {
                var text = Encoding.UTF8.GetString(b, 8, headerEnd - 8);
                string[] names = ["F32", "I64", "BF16", "BOOL", "F64", "U8", "XX"];
                var swapped = text.Replace(names[rng.Next(4)], names[rng.Next(names.Length)]);
                var header = Encoding.UTF8.GetBytes(swapped);
                var result = new byte[8 + header.Length + (b.Length - headerEnd)];
                BitConverter.GetBytes((ulong)header.Length).CopyTo(result, 0);
                header.CopyTo(result, 8);
                Array.Copy(b, headerEnd, result, 8 + header.Length, b.Length - headerEnd);
                return result;
            }
            default: // trailing garbage or data bytes changed (data changes must still load)
                if (rng.Next(2) == 0) return [.. b, .. new byte[rng.Next(1, 16)]];
                b[headerEnd + rng.Next(b.Length - headerEnd)] ^= 0xFF;
                return b;
        }
    }
}
