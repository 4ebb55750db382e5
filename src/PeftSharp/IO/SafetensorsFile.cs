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

    // Pieces read by separate threads: page faults on fresh memory and the kernel's copy both spread over cores.
    const long Piece = 16L << 20;

    unsafe void ReadInto(TensorInfo info, Tensor t)
    {
        byte* start = DataPointer(t);
        long length = info.ByteLength, fileOffset = dataStart + info.Begin;
        FreshMemory.PreferHugePages(start, length);
        int pieces = (int)((length + Piece - 1) / Piece);
        if (pieces == 1)
        {
            ReadPiece(info, start, length, fileOffset);
            return;
        }
        try
        {
            Parallel.For(0, pieces, new ParallelOptions { MaxDegreeOfParallelism = Math.Min(Environment.ProcessorCount, 8) }, i =>
            {
                long offset = i * Piece;
                ReadPiece(info, start + offset, Math.Min(Piece, length - offset), fileOffset + offset);
            });
        }
        catch (AggregateException e) when (e.InnerException is not null)
        {
            // Report what went wrong (a truncated file, an I/O error naming it), not "one or more errors occurred".
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e.InnerException).Throw();
        }
    }

    unsafe void ReadPiece(TensorInfo info, byte* destination, long length, long fileOffset)
    {
        long read = 0;
        while (read < length)
        {
            var span = new Span<byte>(destination + read, (int)Math.Min(length - read, 1L << 30));
            int r = RandomAccess.Read(handle, span, fileOffset + read);
            if (r <= 0) throw new SafetensorsException(Path, $"tensor '{info.Name}' is truncated");
            read += r;
        }
    }

    // The address of a contiguous CPU tensor's first byte. TorchSharp exposes its memory as a Span (of at most 2 GB),
    // so take the address from a one-element view; the native memory does not move.
    static unsafe byte* DataPointer(Tensor t)
    {
        using var flat = t.view(-1);
        using var first = flat.narrow(0, 0, 1);
        fixed (byte* p = first.bytes) return p;
    }

    public void Dispose() => handle.Dispose();
}
