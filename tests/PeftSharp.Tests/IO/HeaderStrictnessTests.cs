using System.Text;
using PeftSharp.Data;
using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Peft;
using static TorchSharp.torch;

namespace PeftSharp.Tests.IO;

/// <summary>Headers and indexes that the reference implementation refuses are refused here too, naming the file.</summary>
public class HeaderStrictnessTests
{
    readonly string dir = SafetensorsTests.TempDir();

    /// <summary>A file of one F32 tensor 'a' of shape [2] whose entry is <paramref name="entry"/>, verbatim.</summary>
    string RawFile(string entry)
    {
        var header = Encoding.UTF8.GetBytes($$"""{"a":{{entry}}}""");
        var path = Path.Combine(dir, "raw.safetensors");
        File.WriteAllBytes(path, [.. BitConverter.GetBytes((ulong)header.Length), .. header, .. new byte[8]]);
        return path;
    }

    [Theory]
    [InlineData("""{"dtype":"F32","dtype":"I32","shape":[2],"data_offsets":[0,8]}""", "field 'dtype' appears twice")]
    [InlineData("""{"dtype":"F32","shape":[2],"shape":[2],"data_offsets":[0,8]}""", "field 'shape' appears twice")]
    [InlineData("""{"dtype":"F32","shape":[2],"data_offsets":["0",8]}""", "data_offsets")]
    [InlineData("""{"dtype":"F32","shape":[2],"data_offsets":[0,{"x":8}]}""", "data_offsets")]
    [InlineData("""{"dtype":"F32","shape":[2],"data_offsets":[0.5,8]}""", "data_offsets")]
    public void Malformed_tensor_entries_are_refused_naming_file_and_tensor(string entry, string problem)
    {
        var path = RawFile(entry);
        var e = Assert.Throws<SafetensorsException>(() => SafetensorsFile.Open(path).Dispose());
        Assert.Contains(path, e.Message);
        Assert.Contains("'a'", e.Message);
        Assert.Contains(problem, e.Message);
    }

    [Fact]
    public void The_same_entry_without_the_repeat_loads()
    {
        using var f = SafetensorsFile.Open(RawFile("""{"dtype":"F32","shape":[2],"data_offsets":[0,8]}"""));
        using var a = f.Load("a");
        Assert.Equal([2L], a.shape);
    }

    [Theory]
    [InlineData("[]", "not an object")]
    [InlineData("""{"weight_map": {"a": 1}}""", "not a shard file name")]
    [InlineData("""{"weight_map": {"a": null}}""", "not a shard file name")]
    [InlineData("""{"weight_map": {"a": "../outside.safetensors"}}""", "outside the checkpoint folder")]
    [InlineData("""{"weight_map": {"a": "/tmp/outside.safetensors"}}""", "outside the checkpoint folder")]
    [InlineData("""{"weight_map": {"a": "shards/../../outside.safetensors"}}""", "outside the checkpoint folder")]
    [InlineData("""{"weight_map": {"a": ""}}""", "not a file name")]
    public void Bad_indexes_are_refused_naming_the_index(string index, string problem)
    {
        var indexPath = Path.Combine(dir, Checkpoint.IndexFile);
        File.WriteAllText(indexPath, index);
        var e = Assert.Throws<SafetensorsException>(() => Checkpoint.Open(dir).Dispose());
        Assert.Contains(indexPath, e.Message);
        Assert.Contains(problem, e.Message);
    }

    [Fact]
    public void Shards_in_a_sub_folder_of_the_checkpoint_are_allowed()
    {
        SafetensorsWriter.Save(Path.Combine(dir, "shards", "part-1.safetensors"), new Dictionary<string, Tensor> { ["a"] = ones(3) });
        SafetensorsWriter.Save(Path.Combine(dir, "part-2.safetensors"), new Dictionary<string, Tensor> { ["b"] = zeros(2) });
        File.WriteAllText(Path.Combine(dir, Checkpoint.IndexFile),
            """{"weight_map": {"a": "shards/part-1.safetensors", "b": "./part-2.safetensors"}}""");
        using var c = Checkpoint.Open(dir);
        using var a = c.Load("a");
        Assert.Equal(3.0, a.sum().item<float>());
        Assert.Equal(2, c.Files.Count);
    }

    [Fact]
    public void Integer_weights_for_a_float_parameter_are_refused_naming_file_and_tensor()
    {
        var folder = IoTestFiles.ModelFolder(Path.Combine(dir, "m"),
            (name, t) => name == "model.norm.weight" ? t.to(ScalarType.Int32) : t);
        var e = Assert.Throws<InvalidDataException>(() => AutoModel.Load(folder));
        Assert.Contains(Path.Combine(folder, Checkpoint.SingleFile), e.Message);
        Assert.Contains("'model.norm.weight'", e.Message);
    }

    [Fact]
    public void A_parquet_footer_length_past_the_file_is_refused_naming_the_file()
    {
        var path = Path.Combine(dir, "train.parquet");
        File.WriteAllBytes(path, [.. "PAR1"u8, .. new byte[32], .. BitConverter.GetBytes(0x7FFF_FFF0u), .. "PAR1"u8]);
        var e = Assert.Throws<DataFormatException>(() => DataReader.Read(path).ToList());
        Assert.Contains(path, e.Message);
        Assert.Contains("footer length", e.Message);
        File.WriteAllBytes(path, [.. "NOPE"u8, .. new byte[32]]);
        Assert.Contains("PAR1", Assert.Throws<DataFormatException>(() => DataReader.Read(path).ToList()).Message);
    }

    [Theory]
    [InlineData("pytorch_model.bin")]
    [InlineData("model.pth")]
    [InlineData("model.ckpt")]
    [InlineData("weights.pkl")]
    [InlineData("model.pt")]
    public void A_folder_with_only_pickle_weights_is_refused_with_the_reason(string pickleName)
    {
        File.WriteAllBytes(Path.Combine(dir, pickleName), [0x80, 0x02]);
        AssertPickleRefusal(pickleName, Assert.ThrowsAny<IOException>(() => AutoModel.Load(dir)));      // no config.json either
        File.Copy(Path.Combine(IoTestFiles.TinyLlama, "config.json"), Path.Combine(dir, "config.json"));
        AssertPickleRefusal(pickleName, Assert.ThrowsAny<IOException>(() => AutoModel.Load(dir)));
        AssertPickleRefusal(pickleName, Assert.ThrowsAny<IOException>(() => AutoModel.Load(Path.Combine(dir, pickleName))));
        AssertPickleRefusal(pickleName, Assert.ThrowsAny<IOException>(() => Checkpoint.Open(dir)));
    }

    [Fact]
    public void An_adapter_folder_with_only_adapter_model_bin_is_refused_with_the_reason()
    {
        File.WriteAllBytes(Path.Combine(dir, "adapter_model.bin"), [0x80, 0x02]);
        var model = AutoModel.Load(IoTestFiles.TinyLlama);
        AssertPickleRefusal("adapter_model.bin", Assert.ThrowsAny<IOException>(() => PeftModel.FromPretrained(model, dir)));
        var merge = Assert.ThrowsAny<Exception>(() => PeftSharp.Merging.AdapterDelta.Open(dir));
        AssertPickleRefusal("adapter_model.bin", merge);
    }

    static void AssertPickleRefusal(string pickleName, Exception e)
    {
        Assert.Contains(pickleName, e.Message);
        Assert.Contains("pickle", e.Message);
        Assert.Contains("arbitrary code", e.Message);
        Assert.Contains("safetensors", e.Message);
    }

    [Fact]
    public void NaN_or_Inf_in_model_weights_warn_naming_tensor_and_file()
    {
        var folder = IoTestFiles.ModelFolder(Path.Combine(dir, "m"), (name, t) =>
        {
            if (name == "model.layers.0.mlp.up_proj.weight") t[0, 0] = float.NaN;
            if (name == "model.norm.weight") t[1] = float.PositiveInfinity;
            return t;
        });
        var warnings = Capture(() => AutoModel.Load(folder));
        var w = Assert.Single(warnings);
        Assert.Contains(Path.Combine(folder, Checkpoint.SingleFile), w);
        Assert.Contains("'model.layers.0.mlp.up_proj.weight'", w);
        Assert.Contains("'model.norm.weight'", w);
        Assert.Empty(Capture(() => AutoModel.Load(IoTestFiles.TinyLlama)));
    }

    [Fact]
    public void Large_finite_weights_whose_sum_overflows_float32_do_not_warn()
    {
        using var big = full(1000, 3e38f);
        Assert.False(NonFiniteWeights.Has(big));
        big[7] = float.NegativeInfinity;
        Assert.True(NonFiniteWeights.Has(big));
    }

    static List<string> Capture(Action action)
    {
        var seen = new List<string>();
        var before = NonFiniteWeights.Warn;
        NonFiniteWeights.Warn = m => { lock (seen) seen.Add(m); };
        try { action(); }
        finally { NonFiniteWeights.Warn = before; }
        return seen;
    }
}
