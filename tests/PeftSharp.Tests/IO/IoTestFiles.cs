using System.Diagnostics;
using PeftSharp.IO;
using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Tests.IO;

/// <summary>Folders, FIFOs and a copy of the tiny-llama fixture for the IO hardening tests.</summary>
internal static class IoTestFiles
{
    public static string TinyLlama => Repo.Fixture("models", "tiny-llama");

    /// <summary>A copy of tiny-llama's config.json with the given weights as its model.safetensors.</summary>
    public static string ModelFolder(string dir, Func<string, Tensor, Tensor>? edit = null)
    {
        Directory.CreateDirectory(dir);
        File.Copy(Path.Combine(TinyLlama, "config.json"), Path.Combine(dir, "config.json"));
        using var ckpt = Checkpoint.Open(TinyLlama);
        var tensors = ckpt.LoadAll();
        if (edit is not null) tensors = tensors.ToDictionary(kv => kv.Key, kv => edit(kv.Key, kv.Value));
        SafetensorsWriter.Save(Path.Combine(dir, Checkpoint.SingleFile), tensors);
        foreach (var t in tensors.Values) t.Dispose();
        return dir;
    }

    public static void MakeFifo(string path)
    {
        using var p = Process.Start(new ProcessStartInfo("mkfifo", [path]))!;
        p.WaitForExit();
        Assert.Equal(0, p.ExitCode);
    }

    /// <summary>
    /// Runs <paramref name="action"/> with a time limit, so a regression that opens a FIFO fails instead of hanging the
    /// suite; a blocked open is released by opening the FIFO for writing.
    /// </summary>
    public static Exception? Within(TimeSpan limit, string fifo, Action action)
    {
        var task = Task.Run(() =>
        {
            try { action(); return null; }
            catch (Exception e) { return e; }
        });
        if (task.Wait(limit)) return task.Result;
        using (new FileStream(fifo, FileMode.Open, FileAccess.Write)) { }
        task.Wait(limit);
        Assert.Fail($"opening {fifo} blocked: a FIFO was opened instead of refused");
        return null;
    }

    /// <summary>The pid of a process that has exited (so no leftover named after it belongs to a live run).</summary>
    public static int DeadPid()
    {
        using var p = Process.Start(new ProcessStartInfo("true"))!;
        p.WaitForExit();
        return p.Id;
    }
}
