using System.Diagnostics;
using PeftSharp.IO;
using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Tests.IO;

/// <summary>A write that fails half-way (a full disk) leaves nothing behind: no temporary file, no partial folder.</summary>
public class FullDiskTests
{
    /// <summary>A file stream whose writes past <c>limit</c> bytes and whose flushes fail, as on a full disk.</summary>
    sealed class FullDiskStream(string path, long limit) : Stream
    {
        readonly FileStream file = new(path, FileMode.Create, FileAccess.Write);
        long written;

        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

        public override void Write(ReadOnlySpan<byte> buffer)
        {
            written += buffer.Length;
            if (written > limit) throw new IOException("No space left on device");
            file.Write(buffer);
        }

        public override void Flush() => throw new IOException("No space left on device");

        protected override void Dispose(bool disposing)
        {
            try { if (disposing) Flush(); }          // a FileStream flushes what it buffers when closed, and that fails too
            finally { file.Dispose(); base.Dispose(disposing); }
        }

        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => written;
        public override long Position { get => written; set => throw new NotSupportedException(); }
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
    }

    [Theory]
    [InlineData(100)]        // fails while writing tensor data
    [InlineData(1 << 30)]    // every write fits; the final flush fails
    public void A_writer_whose_flush_fails_removes_its_temporary_file(long limit)
    {
        var dir = SafetensorsTests.TempDir();
        var target = Path.Combine(dir, "logits.safetensors");
        var specs = new List<TensorSpec> { new("logits", ScalarType.Float32, [64, 64]) };
        var e = Assert.ThrowsAny<IOException>(() =>
        {
            using var w = new SafetensorsStreamWriter(target, specs, null, tmp => new FullDiskStream(tmp, limit));
            using var t = randn(64, 64);
            w.Write("logits", t);
            w.Commit();
        });
        Assert.Contains(target, e.Message);
        Assert.Empty(Directory.GetFileSystemEntries(dir));
    }

    [Fact]
    public void A_full_tmpfs_leaves_no_temporary_files_for_logits_merge_or_adapter_saves()
    {
        var mount = Path.Combine(SafetensorsTests.TempDir(), "full");
        Directory.CreateDirectory(mount);
        if (!Mount(mount))
        {
            // Mounting needs root (or CAP_SYS_ADMIN); the stream test above covers the same cleanup without a mount.
            Console.WriteLine($"skipped: mount -t tmpfs is not permitted here, so {nameof(A_full_tmpfs_leaves_no_temporary_files_for_logits_merge_or_adapter_saves)} did not run");
            return;
        }
        try
        {
            // With 600 KB taken, 700 KB still fits the writer's 1 MB buffer, so the failure comes at the final flush (the
            // case that left temporary files behind); 2.4 MB fails while writing.
            File.WriteAllBytes(Path.Combine(mount, "filler"), new byte[600_000]);
            foreach (var rows in new[] { 170, 600 })
            {
                using var t = randn(rows, 1024);
                var e = Assert.ThrowsAny<IOException>(() => SafetensorsWriter.Save(Path.Combine(mount, "logits.safetensors"),
                    new Dictionary<string, Tensor> { ["logits"] = t }));
                Assert.Contains("logits.safetensors", e.Message);
                Assert.Equal(["filler"], Entries(mount));

                Assert.ThrowsAny<IOException>(() => SafetensorsWriter.Save(Path.Combine(mount, "adapter", "adapter_model.safetensors"),
                    new Dictionary<string, Tensor> { ["lora_A"] = t }));
                Assert.Equal(["filler"], Files(mount));
            }
            var model = AutoModel.Load(IoTestFiles.TinyLlama);   // 560 KB in float32
            Assert.ThrowsAny<IOException>(() => ModelSaving.SavePretrained(model, IoTestFiles.TinyLlama, Path.Combine(mount, "merged")));
            Assert.Equal(["filler"], Files(mount));
            Assert.DoesNotContain(Entries(mount), e => e.StartsWith("merged", StringComparison.Ordinal));
        }
        finally
        {
            Run("umount", mount);
        }
    }

    static string[] Entries(string dir) => Directory.GetFileSystemEntries(dir).Select(Path.GetFileName).Where(n => n != "adapter").ToArray()!;

    static string[] Files(string dir) => Directory.GetFiles(dir, "*", SearchOption.AllDirectories).Select(Path.GetFileName).ToArray()!;

    static bool Mount(string dir) => OperatingSystem.IsLinux() && Run("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", dir);

    static bool Run(string file, params string[] args)
    {
        try
        {
            using var p = Process.Start(new ProcessStartInfo(file, args) { RedirectStandardError = true, RedirectStandardOutput = true })!;
            p.WaitForExit();
            return p.ExitCode == 0;
        }
        catch (System.ComponentModel.Win32Exception) { return false; }
    }
}
