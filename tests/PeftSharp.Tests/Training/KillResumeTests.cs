using System.Diagnostics;
using PeftSharp.IO;
using PeftSharp.Training;

namespace PeftSharp.Tests.Training;

/// <summary>
/// The real thing, through the CLI in child processes: a run killed with SIGKILL right after a checkpoint, then a bare
/// <c>--resume</c>, ends with the same adapter, bit for bit, as a run that was never interrupted. The model folder has no
/// tokenizer.json and the data is token ids, which needs none.
/// </summary>
public class KillResumeTests
{
    [Fact]
    public void A_killed_run_resumed_with_a_bare_resume_gives_the_uninterrupted_adapter()
    {
        using var dir = new TempDir();
        var model = Directory.CreateDirectory(dir.Combine("model")).FullName;
        foreach (var f in new[] { "config.json", "generation_config.json", "model.safetensors" })
            File.Copy(Repo.Path("models", "tinycode-3m", f), Path.Combine(model, f));
        var rng = new Random(7);
        var data = dir.File("ids.jsonl", string.Join('\n', Enumerable.Range(0, 48).Select(_ =>
            $"{{\"input_ids\": [{string.Join(", ", Enumerable.Range(0, 12 + rng.Next(12)).Select(_ => rng.Next(2, 4096)))}]}}")) + "\n");
        string[] Args(string output) =>
        [
            "train", "--model", model, "--train-file", data, "--eval-ratio", "0", "--output-dir", output, "--max-steps", "12",
            "--save-steps", "3", "--batch-size", "4", "--max-length", "24", "--warmup-steps", "0", "--logging-steps", "1", "--seed", "5",
        ];

        var straight = dir.Combine("straight");
        var (code, log) = CliProcess.Run(dir.Path, Args(straight));
        Assert.True(code == 0, log);
        Assert.Contains("no before/after sample", log);

        var killed = dir.Combine("killed");
        var (killedCode, killedLog) = CliProcess.Run(dir.Path, Args(killed), killWhen: line => line.Contains("checkpoint saved:") && line.EndsWith("checkpoint-3"));
        Assert.True(killedCode == 137, $"exit {killedCode}: the run was to be killed mid-way\n{killedLog}");
        Assert.False(File.Exists(Path.Combine(killed, "adapter_model.safetensors")));

        var (resumedCode, resumedLog) = CliProcess.Run(dir.Path, [.. Args(killed), "--resume"]);
        Assert.True(resumedCode == 0, resumedLog);
        Assert.DoesNotContain("step 1/12", resumedLog);                    // continued, not restarted
        using (var a = SafetensorsFile.Open(Path.Combine(straight, "adapter_model.safetensors")))
        using (var b = SafetensorsFile.Open(Path.Combine(killed, "adapter_model.safetensors")))
        {
            Assert.Equal(a.Names.Order(), b.Names.Order());
            foreach (var name in a.Names)
            {
                using var x = a.Load(name);
                using var y = b.Load(name);
                Assert.True(Numerics.Same(x, y), $"{name} differs after kill and resume");
            }
        }
        Assert.Equal(Enumerable.Range(1, 12), MetricsLog.Read(Path.Combine(killed, Trainer.MetricsFile)).Train.Select(p => p.Step));
        Assert.Empty(Directory.GetDirectories(killed, ".checkpoint-*"));
    }
}

/// <summary>Runs the built CLI in a child process, optionally killing it (SIGKILL) when a line of its output matches.</summary>
internal static class CliProcess
{
    public static (int ExitCode, string Log) Run(string workDir, string[] args, Func<string, bool>? killWhen = null)
    {
        var psi = new ProcessStartInfo("dotnet") { WorkingDirectory = workDir, RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add(Dll());
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var log = new System.Text.StringBuilder();
        var stderr = p.StandardError.ReadToEndAsync();
        while (p.StandardOutput.ReadLine() is { } line)
        {
            log.AppendLine(line);
            if (killWhen?.Invoke(line) == true)
            {
                p.Kill();
                break;
            }
        }
        p.WaitForExit();
        return (p.ExitCode, log + stderr.Result);
    }

    static string Dll()
    {
        // tests/PeftSharp.Tests/bin/<Configuration>/<tfm>/ -> src/PeftSharp.Cli/bin/<Configuration>/<tfm>/
        var tfmDir = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        var dll = Repo.Path("src", "PeftSharp.Cli", "bin", tfmDir.Parent!.Name, tfmDir.Name, "PeftSharp.Cli.dll");
        Assert.True(File.Exists(dll), $"build the CLI first: {dll} is missing");
        return dll;
    }
}
