using PeftSharp.Data;
using PeftSharp.IO;
using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Tests.IO;

/// <summary>A FIFO or a device where a file is expected is refused by name at once; opening it would block or never end.</summary>
public class RegularFileTests
{
    static readonly TimeSpan Limit = TimeSpan.FromSeconds(30);

    [Fact]
    public void A_fifo_as_model_safetensors_is_refused()
    {
        if (!OperatingSystem.IsLinux()) return;
        var dir = SafetensorsTests.TempDir();
        File.Copy(Path.Combine(IoTestFiles.TinyLlama, "config.json"), Path.Combine(dir, "config.json"));
        var fifo = Path.Combine(dir, Checkpoint.SingleFile);
        IoTestFiles.MakeFifo(fifo);
        var e = IoTestFiles.Within(Limit, fifo, () => AutoModel.Load(dir));
        Assert.IsType<SafetensorsException>(e);
        Assert.Contains(fifo, e!.Message);
        Assert.Contains("FIFO", e.Message);
    }

    [Fact]
    public void A_fifo_as_a_shard_of_an_index_is_refused()
    {
        if (!OperatingSystem.IsLinux()) return;
        var dir = SafetensorsTests.TempDir();
        SafetensorsWriter.SaveCheckpoint(dir, new Dictionary<string, Tensor> { ["a"] = ones(64, 64), ["b"] = ones(64, 64) }, maxShardBytes: 20_000);
        var shard = Path.Combine(dir, "model-00002-of-00002.safetensors");
        File.Delete(shard);
        IoTestFiles.MakeFifo(shard);
        var e = IoTestFiles.Within(Limit, shard, () => Checkpoint.Open(dir).Dispose());
        Assert.IsType<SafetensorsException>(e);
        Assert.Contains(shard, e!.Message);
    }

    [Fact]
    public void A_fifo_as_a_merge_models_input_is_refused()
    {
        if (!OperatingSystem.IsLinux()) return;
        var dir = SafetensorsTests.TempDir();
        var fifo = Path.Combine(dir, "input.safetensors");
        IoTestFiles.MakeFifo(fifo);
        PeftSharp.Tests.Merging.TinyModels.Write(dir, "other", 1);
        var config = PeftSharp.Merging.MergeConfigYaml.Parse("merge_method: linear\nparameters: {weight: 0.5}\nmodels: [input.safetensors, other]")
            with { BaseDirectory = dir };
        var e = IoTestFiles.Within(Limit, fifo, () => PeftSharp.Merging.ModelMerger.Run(config, Path.Combine(dir, "out")));
        Assert.NotNull(e);
        Assert.Contains(fifo, e!.Message);
        Assert.Contains("not a regular file", e.Message);
    }

    [Fact]
    public void A_fifo_or_dev_zero_as_the_train_file_is_refused()
    {
        if (!OperatingSystem.IsLinux()) return;
        var dir = SafetensorsTests.TempDir();
        var fifo = Path.Combine(dir, "train.jsonl");
        IoTestFiles.MakeFifo(fifo);
        var e = IoTestFiles.Within(Limit, fifo, () => DataReader.Read(fifo).ToList());
        Assert.IsType<IOException>(e);
        Assert.Contains(fifo, e!.Message);

        var zero = Assert.Throws<IOException>(() => DataReader.Read("/dev/zero").ToList());
        Assert.Contains("/dev/zero", zero.Message);
        Assert.Contains("character device", zero.Message);
    }

    [Fact]
    public void A_fifo_as_tokenizer_json_merge_config_or_adapter_config_is_refused()
    {
        if (!OperatingSystem.IsLinux()) return;
        var dir = SafetensorsTests.TempDir();
        var tokenizer = Path.Combine(dir, "tokenizer.json");
        IoTestFiles.MakeFifo(tokenizer);
        AssertRefused(tokenizer, () => PeftSharp.Tokenization.HfTokenizer.Load(dir));
        var yaml = Path.Combine(dir, "merge.yaml");
        IoTestFiles.MakeFifo(yaml);
        AssertRefused(yaml, () => PeftSharp.Merging.MergeConfigYaml.Load(yaml));
        var adapterConfig = Path.Combine(dir, "adapter_config.json");
        IoTestFiles.MakeFifo(adapterConfig);
        AssertRefused(adapterConfig, () => PeftSharp.Merging.AdapterDelta.Open(dir));

        static void AssertRefused(string fifo, Action open)
        {
            var e = IoTestFiles.Within(Limit, fifo, open);
            Assert.IsType<IOException>(e);
            Assert.Contains(fifo, e!.Message);
            Assert.Contains("FIFO", e.Message);
        }
    }

    [Fact]
    public void A_regular_file_passes_and_a_directory_is_named_as_one()
    {
        var dir = SafetensorsTests.TempDir();
        var file = Path.Combine(dir, "a.txt");
        File.WriteAllText(file, "x");
        RegularFile.Require(file);
        Assert.Contains("directory", Assert.Throws<IOException>(() => RegularFile.Require(dir)).Message);
        Assert.Throws<FileNotFoundException>(() => RegularFile.Require(Path.Combine(dir, "missing")));
    }
}
