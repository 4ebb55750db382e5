using PeftSharp.IO;
using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Tests.IO;

/// <summary>Saving into a folder that already holds a model: the new weights, and only they, are what loads.</summary>
public class OutputFolderTests
{
    [Theory]
    [InlineData(false)]   // single file first, then shards: the old model.safetensors must go
    [InlineData(true)]    // shards first, then a single file: the old shards and index must go
    public void Saving_again_with_the_other_layout_leaves_no_stale_weights(bool shardedFirst)
    {
        var dir = SafetensorsTests.TempDir();
        var outDir = Path.Combine(dir, "out");
        var model = AutoModel.Load(IoTestFiles.TinyLlama);
        ModelSaving.SavePretrained(model, IoTestFiles.TinyLlama, outDir, maxShardBytes: shardedFirst ? 100_000 : 5_000_000_000);
        using (no_grad()) foreach (var p in model.parameters()) p.mul_(2);
        ModelSaving.SavePretrained(model, IoTestFiles.TinyLlama, outDir, maxShardBytes: shardedFirst ? 5_000_000_000 : 100_000);

        var weightFiles = Directory.GetFiles(outDir, "model*").Select(Path.GetFileName).ToList();
        if (shardedFirst) Assert.Equal([Checkpoint.SingleFile], weightFiles);
        else
        {
            Assert.DoesNotContain(Checkpoint.SingleFile, weightFiles);
            Assert.Contains(Checkpoint.IndexFile, weightFiles);
        }
        using var saved = Checkpoint.Open(outDir);
        foreach (var (name, p) in model.named_parameters())
        {
            if (!saved.Contains(name)) continue;   // a tied weight, written once
            using var t = saved.Load(name);
            Assert.True(Numerics.Same(t, p), $"{name} is not the weight of the second save");
        }
        Assert.Empty(Directory.GetDirectories(dir, "out.partial-*"));
    }

    [Fact]
    public void The_sharded_writer_itself_removes_the_other_layout()
    {
        var dir = SafetensorsTests.TempDir();
        var tensors = new Dictionary<string, Tensor> { ["a"] = randn(64, 64), ["b"] = randn(64, 64) };
        SafetensorsWriter.SaveCheckpoint(dir, tensors, maxShardBytes: 20_000);
        Assert.Equal(2, Directory.GetFiles(dir, "model-*-of-*.safetensors").Length);
        SafetensorsWriter.SaveCheckpoint(dir, tensors);
        Assert.Equal([Checkpoint.SingleFile], Directory.GetFiles(dir).Select(Path.GetFileName));
        SafetensorsWriter.SaveCheckpoint(dir, tensors, maxShardBytes: 20_000);
        Assert.DoesNotContain(Checkpoint.SingleFile, Directory.GetFiles(dir).Select(Path.GetFileName));
    }

    [Fact]
    public void Leftovers_of_dead_runs_are_removed_and_those_of_live_ones_kept()
    {
        var dir = SafetensorsTests.TempDir();
        var outDir = Path.Combine(dir, "out");
        int dead = IoTestFiles.DeadPid();
        Directory.CreateDirectory($"{outDir}.partial-{dead}");
        Directory.CreateDirectory($"{outDir}.partial-1");                      // pid 1 is alive: another run's, keep it
        Directory.CreateDirectory(outDir);
        var staleTmp = Path.Combine(outDir, $"{Checkpoint.SingleFile}.tmp{dead}");
        var staleConfigTmp = Path.Combine(outDir, $"config.json.tmp{dead}");
        File.WriteAllText(staleTmp, "half");
        File.WriteAllText(staleConfigTmp, "half");

        SafetensorsWriter.Save(Path.Combine(outDir, Checkpoint.SingleFile), new Dictionary<string, Tensor> { ["a"] = ones(2) });
        AtomicFile.WriteAllText(Path.Combine(outDir, "config.json"), "{}");
        ModelSaving.SavePretrained(AutoModel.Load(IoTestFiles.TinyLlama), null, outDir);

        Assert.False(File.Exists(staleTmp));
        Assert.False(File.Exists(staleConfigTmp));
        Assert.False(Directory.Exists($"{outDir}.partial-{dead}"));
        Assert.True(Directory.Exists($"{outDir}.partial-1"));
        Assert.Empty(Directory.GetFiles(outDir, "*.tmp*"));
    }
}
