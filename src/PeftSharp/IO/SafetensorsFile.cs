using System.Text.Json;
using Microsoft.Win32.SafeHandles;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.IO;

/// <summary>What the header says of one tensor: dtype, shape and byte range within the data section.</summary>
public sealed record TensorInfo(string Name, ScalarType DType, long[] Shape, long Begin, long End)
{
    public long ByteLength => End - Begin;
}

/// <summary>
/// One <c>.safetensors</c> file (https://github.com/huggingface/safetensors): an 8-byte little-endian header
/// length, a JSON header, then the raw tensor bytes. The header is validated completely on open, so a
/// hostile file fails here with a message, never later with a crash. Tensors are read straight into
/// the memory of a new tensor: one copy from the page cache, none through managed arrays.
/// </summary>
public sealed class SafetensorsFile : IDisposable
{
    /// <summary>Headers larger than this are refused (the reference implementation uses the same bound).</summary>
    public const long MaxHeaderBytes = 100_000_000;

    readonly SafeFileHandle handle;
    readonly long dataStart;
    readonly Dictionary<string, TensorInfo> tensors;

    public string Path { get; }
    public IReadOnlyDictionary<string, string> Metadata { get; }
    public IReadOnlyCollection<string> Names => tensors.Keys;
    public IReadOnlyDictionary<string, TensorInfo> Tensors => tensors;

    SafetensorsFile(string path, SafeFileHandle handle, long dataStart, Dictionary<string, TensorInfo> tensors,
        Dictionary<string, string> metadata)
    {
        Path = path;
        this.handle = handle;
        this.dataStart = dataStart;
        this.tensors = tensors;
        Metadata = metadata;
    }

    public static SafetensorsFile Open(string path)
    {
        CheckpointFormat.RefusePickle(path);
        if (RegularFile.Problem(path) is { } problem) throw new SafetensorsException(path, problem);
        var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.RandomAccess);
        try
        {
            long fileLength = RandomAccess.GetLength(handle);
            if (fileLength < 8) throw new SafetensorsException(path, $"file is {fileLength} bytes, too short for a safetensors header");
            Span<byte> lenBytes = stackalloc byte[8];
            RandomAccess.Read(handle, lenBytes, 0);
            ulong headerLen = BitConverter.ToUInt64(lenBytes);
            if (headerLen > MaxHeaderBytes)
                throw new SafetensorsException(path, $"header length {headerLen} exceeds the {MaxHeaderBytes}-byte limit");
            if ((long)headerLen > fileLength - 8)
                throw new SafetensorsException(path, $"header length {headerLen} runs past the end of the {fileLength}-byte file");
            var header = new byte[headerLen];
            RandomAccess.Read(handle, header, 8);
            long dataStart = 8 + (long)headerLen;
            var (tensors, metadata) = SafetensorsHeader.Parse(path, header, fileLength - dataStart);
            return new SafetensorsFile(path, handle, dataStart, tensors, metadata);
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException or ArgumentException or OverflowException)
        {
            // A header case the checks above did not foresee must still fail by name, not as a bare framework error.
            handle.Dispose();
            throw new SafetensorsException(path, $"header cannot be read ({e.Message})");
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    public bool Contains(string name) => tensors.ContainsKey(name);

    public TensorInfo Info(string name) =>
        tensors.TryGetValue(name, out var info) ? info
            : throw new KeyNotFoundException($"{Path}: no tensor named '{name}'");

    /// <summary>Reads one tensor into a new CPU tensor of the stored dtype.</summary>
    public Tensor Load(string name)
    {
        var info = Info(name);
        var t = empty(info.Shape, info.DType);
        if (info.ByteLength > 0) ReadInto(info, t);
        return t;
    }

    /// <summary>
    /// Reads one tensor straight into <paramref name="destination"/> when it is a contiguous CPU tensor of the stored
    /// dtype (no intermediate tensor); otherwise loads it and copies with a cast.
    /// </summary>
    public void LoadInto(string name, Tensor destination)
    {
        var info = Info(name);
        if (!info.Shape.SequenceEqual(destination.shape))
            throw new ArgumentException($"{Path}: tensor '{name}' has shape [{string.Join(",", info.Shape)}], " +
                $"the destination [{string.Join(",", destination.shape)}]");
        if (destination.dtype == info.DType && destination.device_type == DeviceType.CPU && destination.is_contiguous())
        {
            if (info.ByteLength > 0) ReadInto(info, destination);
            return;
        }
        using var loaded = Load(name);
        destination.copy_(loaded);
    }

    /// <summary>Reads every tensor (or those whose names pass <paramref name="filter"/>).</summary>
    public Dictionary<string, Tensor> LoadAll(Func<string, bool>? filter = null)
    {
        var result = new Dictionary<string, Tensor>();
        foreach (var name in tensors.Keys)
            if (filter is null || filter(name)) result[name] = Load(name);
        return result;
    }

    void ReadInto(TensorInfo info, Tensor t)
    {
        // Tensors over 2 GB do not fit one Span: read them in chunks through a byte view.
        using var flat = t.view(-1);
        long elemSize = info.ByteLength / flat.numel();
        long chunkElems = (1L << 30) / elemSize, done = 0, total = flat.numel();
        while (done < total)
        {
            long n = Math.Min(chunkElems, total - done);
            using var part = flat.narrow(0, done, n);
            var span = part.bytes;
            int read = 0;
            while (read < span.Length)
            {
                int r = RandomAccess.Read(handle, span[read..], dataStart + info.Begin + done * elemSize + read);
                if (r <= 0) throw new SafetensorsException(Path, $"tensor '{info.Name}' is truncated");
                read += r;
            }
            done += n;
        }
    }

    public void Dispose() => handle.Dispose();
}
