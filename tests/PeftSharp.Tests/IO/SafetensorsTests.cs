using PeftSharp.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Tests.IO;

public class SafetensorsTests
{
    [Fact]
    public void Sharded_checkpoint_holds_the_same_tensors_as_the_single_file()
    {
        using var single = Checkpoint.Open(Repo.Fixture("models", "tiny-llama"));
        using var sharded = Checkpoint.Open(Repo.Fixture("models", "tiny-llama-sharded"));
        Assert.Equal(single.Names.OrderBy(n => n), sharded.Names.OrderBy(n => n));
        Assert.Equal(9, sharded.Files.Count);
        foreach (var n in single.Names)
        {
            using var a = single.Load(n);
            using var b = sharded.Load(n);
            Assert.True(Numerics.Same(a, b), n);
        }
    }

    [Theory]
    [InlineData(ScalarType.Float64)]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.Float16)]
    [InlineData(ScalarType.BFloat16)]
    [InlineData(ScalarType.Int64)]
    [InlineData(ScalarType.Int32)]
    [InlineData(ScalarType.Int16)]
    [InlineData(ScalarType.Int8)]
    [InlineData(ScalarType.Byte)]
    [InlineData(ScalarType.Bool)]
    public void Every_dtype_round_trips(ScalarType dtype)
    {
        var dir = TempDir();
        var path = Path.Combine(dir, "t.safetensors");
        using var src = (randn(3, 5, 7) * 50).to(dtype);
        using var empty0 = zeros(0, 4).to(dtype);
        SafetensorsWriter.Save(path, new Dictionary<string, Tensor> { ["x"] = src, ["e"] = empty0 },
            new Dictionary<string, string> { ["format"] = "pt" });
        using var f = SafetensorsFile.Open(path);
        Assert.Equal("pt", f.Metadata["format"]);
        using var back = f.Load("x");
        Assert.Equal(dtype, back.dtype);
        Assert.True(Numerics.Same(src, back));
        Assert.Equal(new long[] { 0, 4 }, f.Load("e").shape);
    }

    [Fact]
    public void Tensors_read_in_parallel_pieces_come_back_exactly_into_new_and_existing_tensors()
    {
        // 8.7 M bfloat16 values = 17.4 MB: two 16 MiB pieces, the second partial, at an odd offset after a small tensor.
        var path = Path.Combine(TempDir(), "big.safetensors");
        using var small = arange(3, dtype: ScalarType.BFloat16);
        using var big = randn(8_700_000, dtype: ScalarType.BFloat16);
        SafetensorsWriter.Save(path, new Dictionary<string, Tensor> { ["small"] = small, ["big"] = big });
        using var f = SafetensorsFile.Open(path);
        using var loaded = f.Load("big");
        Assert.True(Numerics.Same(big, loaded));
        using var existing = zeros(8_700_000, dtype: ScalarType.BFloat16);
        f.LoadInto("big", existing);
        Assert.True(Numerics.Same(big, existing));
        using var cast = zeros(8_700_000);
        f.LoadInto("big", cast);                        // another dtype: loaded, then cast
        Assert.True(Numerics.Same(big.to(ScalarType.Float32), cast));
    }

    [Fact]
    public void A_file_truncated_after_open_fails_naming_file_and_tensor_even_when_read_in_pieces()
    {
        var path = Path.Combine(TempDir(), "shrinking.safetensors");
        using var big = ones(8_700_000, dtype: ScalarType.BFloat16);
        SafetensorsWriter.Save(path, new Dictionary<string, Tensor> { ["big"] = big });
        using var f = SafetensorsFile.Open(path);
        using (var w = new FileStream(path, FileMode.Open, FileAccess.Write)) w.SetLength(w.Length / 2);
        var e = Assert.Throws<SafetensorsException>(() => f.Load("big"));
        Assert.Contains(path, e.Message);
        Assert.Contains("'big' is truncated", e.Message);
    }

    [Fact]
    public void Sharded_writer_splits_by_size_and_reads_back()
    {
        var dir = TempDir();
        var tensors = Enumerable.Range(0, 6).ToDictionary(i => $"w{i}", i => (Tensor)full(100, 10, (float)i));
        SafetensorsWriter.SaveCheckpoint(dir, tensors, maxShardBytes: 8_000);
        Assert.True(File.Exists(Path.Combine(dir, Checkpoint.IndexFile)));
        Assert.True(File.Exists(Path.Combine(dir, "model-00003-of-00003.safetensors")));
        using var c = Checkpoint.Open(dir);
        for (int i = 0; i < 6; i++) Assert.Equal((float)i, c.Load($"w{i}").mean().item<float>());
    }

    [Fact]
    public void Pickle_checkpoints_are_refused_with_the_reason()
    {
        var dir = TempDir();
        File.WriteAllBytes(Path.Combine(dir, "pytorch_model.bin"), new byte[16]);
        var e = Assert.Throws<SafetensorsException>(() => Checkpoint.Open(dir));
        Assert.Contains("arbitrary code", e.Message);
        Assert.Contains("pytorch_model.bin", e.Message);
    }

    [Fact]
    public void Shard_names_that_escape_the_folder_are_refused()
    {
        var dir = TempDir();
        SafetensorsWriter.Save(Path.Combine(dir, "..", "evil.safetensors"), new Dictionary<string, Tensor> { ["a"] = ones(2) });
        File.WriteAllText(Path.Combine(dir, Checkpoint.IndexFile), """{"weight_map": {"a": "../evil.safetensors"}}""");
        var e = Assert.Throws<SafetensorsException>(() => Checkpoint.Open(dir));
        Assert.Contains("outside the checkpoint folder", e.Message);
    }

    internal static string TempDir()
    {
        var d = Path.Combine(Path.GetTempPath(), "peftsharp-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(d);
        return d;
    }
}
