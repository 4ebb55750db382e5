using System.Text;
using System.Text.Json;
using static TorchSharp.torch;

namespace PeftSharp.IO;

/// <summary>What will be written for one tensor, declared before any data so the header can come first.</summary>
public sealed record TensorSpec(string Name, ScalarType DType, long[] Shape)
{
    public long ByteLength => Shape.Aggregate(1L, (a, b) => a * b) * SafetensorsDType.SizeOf(DType);
    public static TensorSpec Of(string name, Tensor t) => new(name, t.dtype, t.shape);
}

/// <summary>
/// Writes one safetensors file tensor by tensor, so a caller never holds more than the tensor in hand.
/// Data goes to a temporary file beside the target, renamed over it only by <see cref="Commit"/>:
/// an interrupted write leaves any previous file intact.
/// </summary>
public sealed class SafetensorsStreamWriter : IDisposable
{
    readonly string path;
    readonly string tmp;
    readonly Stream stream;
    readonly List<TensorSpec> specs;
    int next;
    bool committed;

    public SafetensorsStreamWriter(string path, IReadOnlyList<TensorSpec> specs, IReadOnlyDictionary<string, string>? metadata = null)
        : this(path, specs, metadata, tmp => new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20))
    {
    }

    /// <summary><paramref name="open"/> creates the temporary file's stream (tests pass one that fails).</summary>
    internal SafetensorsStreamWriter(string path, IReadOnlyList<TensorSpec> specs, IReadOnlyDictionary<string, string>? metadata,
        Func<string, Stream> open)
    {
        this.path = path;
        this.specs = specs.ToList();
        if (this.specs.Select(s => s.Name).Distinct().Count() != this.specs.Count)
            throw new ArgumentException($"{path}: duplicate tensor names");
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        Leftovers.RemoveStaleTemps(path);
        tmp = path + $".tmp{Environment.ProcessId}";
        stream = open(tmp);
        try
        {
            var header = BuildHeader(this.specs, metadata);
            Guarded(() =>
            {
                stream.Write(BitConverter.GetBytes((ulong)header.Length));
                stream.Write(header);
            });
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    // A full disk surfaces as an IOException naming the temporary file; say which output it was.
    void Guarded(Action write)
    {
        try { write(); }
        catch (IOException e) { throw new IOException($"{path}: could not be written ({e.Message})", e); }
    }

    static byte[] BuildHeader(List<TensorSpec> specs, IReadOnlyDictionary<string, string>? metadata)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                w.WriteStartObject("__metadata__");
                foreach (var (k, v) in metadata) w.WriteString(k, v);
                w.WriteEndObject();
            }
            long offset = 0;
            foreach (var s in specs)
            {
                w.WriteStartObject(s.Name);
                w.WriteString("dtype", SafetensorsDType.NameOf(s.DType));
                w.WriteStartArray("shape");
                foreach (var d in s.Shape) w.WriteNumberValue(d);
                w.WriteEndArray();
                w.WriteStartArray("data_offsets");
                w.WriteNumberValue(offset);
                offset += s.ByteLength;
                w.WriteNumberValue(offset);
                w.WriteEndArray();
                w.WriteEndObject();
            }
            w.WriteEndObject();
        }
        // Pad with spaces so the data section starts 8-byte aligned, as the reference writer does.
        int pad = (int)((8 - ms.Length % 8) % 8);
        for (int i = 0; i < pad; i++) ms.WriteByte((byte)' ');
        return ms.ToArray();
    }

    /// <summary>Writes the next tensor; names must come in the declared order.</summary>
    public void Write(string name, Tensor tensor)
    {
        if (next >= specs.Count) throw new InvalidOperationException($"{path}: all {specs.Count} tensors were already written");
        var spec = specs[next];
        if (spec.Name != name) throw new InvalidOperationException($"{path}: expected tensor '{spec.Name}' next, got '{name}'");
        if (tensor.dtype != spec.DType || !tensor.shape.SequenceEqual(spec.Shape))
            throw new ArgumentException($"{path}: tensor '{name}' is {tensor.dtype} [{string.Join(",", tensor.shape)}], " +
                $"declared {spec.DType} [{string.Join(",", spec.Shape)}]");
        Guarded(() => WriteBytes(stream, tensor));
        next++;
    }

    internal static void WriteBytes(Stream stream, Tensor tensor)
    {
        using var cpu = tensor.cpu();
        using var c = cpu.contiguous();
        if (c.numel() == 0) return;
        using var flat = c.view(-1);
        long total = flat.numel(), done = 0;
        long chunk = (1L << 30) / SafetensorsDType.SizeOf(c.dtype);
        while (done < total)
        {
            long n = Math.Min(chunk, total - done);
            using var part = flat.narrow(0, done, n);
            stream.Write(part.bytes);
            done += n;
        }
    }

    /// <summary>Flushes to disk and renames the temporary file over the target.</summary>
    public void Commit()
    {
        if (next != specs.Count)
            throw new InvalidOperationException($"{path}: {specs.Count - next} declared tensors were not written (next: '{specs[next].Name}')");
        Guarded(() =>
        {
            if (stream is FileStream fs) fs.Flush(flushToDisk: true);
            else stream.Flush();
            stream.Dispose();
        });
        File.Move(tmp, path, overwrite: true);
        committed = true;
    }

    public void Dispose()
    {
        if (committed) return;
        // Closing flushes what is buffered; on a full disk that fails too, and the temporary file must still go.
        try { stream.Dispose(); } catch (IOException) { }
        try { File.Delete(tmp); } catch (IOException) { }
    }
}

/// <summary>Whole-dictionary and sharded saving on top of <see cref="SafetensorsStreamWriter"/>.</summary>
public static class SafetensorsWriter
{
    /// <summary>Saves tensors to one file, atomically.</summary>
    public static void Save(string path, IReadOnlyDictionary<string, Tensor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var specs = tensors.Select(kv => TensorSpec.Of(kv.Key, kv.Value)).ToList();
        using var w = new SafetensorsStreamWriter(path, specs, metadata);
        foreach (var s in specs) w.Write(s.Name, tensors[s.Name]);
        w.Commit();
    }

    /// <summary>
    /// Saves a checkpoint folder: <c>{baseName}.safetensors</c> when everything fits in <paramref name="maxShardBytes"/>,
    /// else <c>{baseName}-0000i-of-0000n.safetensors</c> plus <c>{baseName}.safetensors.index.json</c>, as transformers does.
    /// </summary>
    public static void SaveCheckpoint(string folder, IReadOnlyDictionary<string, Tensor> tensors, long maxShardBytes = 5_000_000_000,
        string baseName = "model", IReadOnlyDictionary<string, string>? metadata = null)
    {
        var specs = tensors.Select(kv => TensorSpec.Of(kv.Key, kv.Value)).ToList();
        using var w = new ShardedCheckpointWriter(folder, specs, maxShardBytes, baseName, metadata);
        foreach (var s in specs) w.Write(s.Name, tensors[s.Name]);
        w.Commit();
    }
}

/// <summary>Streams tensors into size-bounded shards; the index and the renames happen at <see cref="Commit"/>.</summary>
public sealed class ShardedCheckpointWriter : IDisposable
{
    readonly string folder;
    readonly string baseName;
    readonly List<List<TensorSpec>> shards = new();
    readonly IReadOnlyDictionary<string, string>? metadata;
    readonly List<string> shardNames = new();
    SafetensorsStreamWriter? current;
    readonly List<SafetensorsStreamWriter> pending = new();
    int shardIndex = -1, inShard;

    public ShardedCheckpointWriter(string folder, IReadOnlyList<TensorSpec> specs, long maxShardBytes, string baseName = "model",
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        this.folder = folder;
        this.baseName = baseName;
        this.metadata = metadata ?? new Dictionary<string, string> { ["format"] = "pt" };
        long size = 0;
        foreach (var s in specs)
        {
            if (shards.Count == 0 || (size + s.ByteLength > maxShardBytes && shards[^1].Count > 0))
            {
                shards.Add(new List<TensorSpec>());
                size = 0;
            }
            shards[^1].Add(s);
            size += s.ByteLength;
        }
        if (shards.Count == 0) shards.Add(new List<TensorSpec>());
        for (int i = 0; i < shards.Count; i++)
            shardNames.Add(shards.Count == 1 ? $"{baseName}.safetensors" : $"{baseName}-{i + 1:D5}-of-{shards.Count:D5}.safetensors");
        Directory.CreateDirectory(folder);
        Advance();
    }

    public int ShardCount => shards.Count;

    void Advance()
    {
        shardIndex++;
        inShard = 0;
        if (shardIndex < shards.Count)
        {
            current = new SafetensorsStreamWriter(Path.Combine(folder, shardNames[shardIndex]), shards[shardIndex], metadata);
            pending.Add(current);
        }
    }

    public void Write(string name, Tensor tensor)
    {
        while (current is not null && inShard == shards[shardIndex].Count) Advance();
        if (current is null) throw new InvalidOperationException($"{folder}: more tensors written than declared");
        current.Write(name, tensor);
        inShard++;
    }

    public void Commit()
    {
        while (shardIndex < shards.Count - 1) Advance();
        foreach (var w in pending) w.Commit();
        var indexPath = Path.Combine(folder, $"{baseName}.safetensors.index.json");
        if (shards.Count > 1)
        {
            var weightMap = new SortedDictionary<string, string>(StringComparer.Ordinal);
            long total = 0;
            for (int i = 0; i < shards.Count; i++)
                foreach (var s in shards[i]) { weightMap[s.Name] = shardNames[i]; total += s.ByteLength; }
            var json = JsonSerializer.Serialize(new { metadata = new { total_size = total }, weight_map = weightMap },
                new JsonSerializerOptions { WriteIndented = true });
            AtomicFile.WriteAllText(indexPath, json);
        }
        else if (File.Exists(indexPath)) File.Delete(indexPath);
        // A single file left from an earlier sharded save (or shards from a single-file one) would be read instead of,
        // or beside, the new weights.
        var stale = Directory.GetFiles(folder, $"{baseName}-*-of-*.safetensors").Append(Path.Combine(folder, $"{baseName}.safetensors"))
            .Where(f => !shardNames.Contains(Path.GetFileName(f)) && File.Exists(f));
        foreach (var f in stale.ToList()) File.Delete(f);
    }

    public void Dispose()
    {
        foreach (var w in pending) w.Dispose();
    }
}
