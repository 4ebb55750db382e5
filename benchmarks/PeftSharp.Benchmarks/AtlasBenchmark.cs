using System.Diagnostics;
using System.Text.Json.Nodes;
using PeftSharp.Data;
using PeftSharp.IO;
using PeftSharp.Merging;
using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Benchmarks;

/// <summary>
/// Peak memory of aTLAS: the base model and T task models (the base plus noise, stored in the base's dtype), learned
/// for a few steps on random token ids, in a fresh child process per row. "held" is the library's first
/// <c>Atlas.Run</c>: every task vector in memory plus a copy of every base tensor; "streamed" is
/// <c>merge-models</c>' path (<c>Atlas.Run(MergeConfig, ...)</c>), which reads base weights and task vectors from the
/// checkpoints one tensor at a time. Peaks are polled from /proc: RssAnon (what the process allocated) and VmHWM
/// (resident, libtorch's mapped code included).
/// Usage: atlas [--model models/tinycode-3m | --hidden 768 --layers 8] [--tasks 3] [--steps 10] [--dir DIR] [--keep]
/// </summary>
internal static class AtlasBenchmark
{
    public const string ChildVerb = "_atlas-one";

    public static int Run(string[] args)
    {
        int tasks = int.Parse(Arg(args, "--tasks") ?? "3"), steps = int.Parse(Arg(args, "--steps") ?? "10");
        var dir = Arg(args, "--dir") ?? Path.Combine(Path.GetTempPath(), "peftsharp-atlas-bench");
        Directory.CreateDirectory(dir);
        var baseFolder = Arg(args, "--hidden") is { } hidden
            ? Synthetic(dir, int.Parse(hidden), int.Parse(Arg(args, "--layers") ?? "8"))
            : Path.GetFullPath(Arg(args, "--model") ?? Path.Combine("models", "tinycode-3m"));
        var names = Enumerable.Range(1, tasks).Select(t => $"task{t}").ToList();
        long modelBytes = Perturb(baseFolder, dir, names);
        Console.WriteLine($"base {baseFolder} ({modelBytes / 1e6:F0} MB of weights as stored, {modelBytes / 1e6 * 4 / StoredBytesPerValue(baseFolder):F0} MB as float32), " +
            $"{tasks} task models, {steps} steps of 8 x 64 tokens; {Environment.ProcessorCount} cores");
        File.WriteAllText(Path.Combine(dir, "atlas.yaml"),
            $"merge_method: atlas\nbase_model: {baseFolder}\nparameters: {{steps: {steps}, batch_size: 8}}\nmodels: [{string.Join(", ", names)}]\n");
        Console.WriteLine();
        Console.WriteLine($"| {"path",-9} | {"seconds",7} | {"CPU s",6} | {"peak RssAnon",12} | {"peak VmHWM",10} |");
        Console.WriteLine($"|{new string('-', 11)}|{new string('-', 9)}|{new string('-', 8)}|{new string('-', 14)}|{new string('-', 12)}|");
        foreach (var path in new[] { "held", "streamed" })
        {
            var (seconds, cpu, anon, hwm, code) = Child(dir, path, baseFolder, steps, names);
            Console.WriteLine($"| {path,-9} | {seconds,7:F1} | {cpu,6:F1} | {anon / 1e6,9:F0} MB | {hwm / 1e6,7:F0} MB |" + (code == 0 ? "" : $" exit {code}"));
        }
        if (!args.Contains("--keep")) Directory.Delete(dir, recursive: true);
        return 0;
    }

    /// <summary>In the child: one aTLAS run by <c>held</c> or <c>streamed</c>, nothing else.</summary>
    public static int RunOne(string[] args)
    {
        var (path, dir, baseFolder, steps) = (args[0], args[1], args[2], int.Parse(args[3]));
        var tasks = args[4..].Select(t => Path.Combine(dir, t)).ToList();
        var config = ModelConfig.Load(baseFolder);
        using var g = new Generator(7, device: null);
        var data = BatchSource.FromInputIds(randint(0, config.VocabSize, [64, 64], dtype: ScalarType.Int64, generator: g));
        var o = new AtlasOptions(Steps: steps, BatchSize: 8);
        if (path == "streamed")
            Atlas.Run(MergeConfigYaml.Load(Path.Combine(dir, "atlas.yaml")), data, Path.Combine(dir, "out"), o);
        else
            Held(baseFolder, tasks, data, o, Path.Combine(dir, "out"));
        return 0;
    }

    // The first Atlas.Run, as it was: the model, every task vector as a tensor, then the learner (which copies the base).
    static void Held(string baseFolder, List<string> taskModels, BatchSource data, AtlasOptions o, string output)
    {
        using var model = AutoModel.Load(baseFolder);
        var taskVectors = taskModels.Select(folder =>
        {
            using var ckpt = Checkpoint.Open(folder);
            var tv = new Dictionary<string, Tensor>();
            foreach (var (name, p) in model.named_parameters())
                if (ckpt.Names.Contains(name) && p.is_floating_point())
                    tv[name] = ckpt.Load(name).to(p.dtype).sub_(p.detach());
            return (IReadOnlyDictionary<string, Tensor>)tv;
        }).ToList();
        Atlas.LearnInPlace(model, taskVectors, data, o);
        ModelSaving.SavePretrained(model, baseFolder, output);
    }

    static (double Seconds, double Cpu, long Anon, long Hwm, int Code) Child(string dir, string path, string baseFolder, int steps, List<string> tasks)
    {
        var psi = new ProcessStartInfo(Environment.ProcessPath!) { WorkingDirectory = dir };
        if (Path.GetFileNameWithoutExtension(Environment.ProcessPath) == "dotnet") psi.ArgumentList.Add(typeof(AtlasBenchmark).Assembly.Location);
        foreach (var a in new[] { ChildVerb, path, dir, baseFolder, steps.ToString() }.Concat(tasks)) psi.ArgumentList.Add(a);
        var sw = Stopwatch.StartNew();
        using var p = Process.Start(psi)!;
        long anon = 0, hwm = 0;
        double cpu = 0;
        while (!p.WaitForExit(20))
        {
            anon = Math.Max(anon, Status(p.Id, "RssAnon:"));
            hwm = Math.Max(hwm, Status(p.Id, "VmHWM:"));
            try { p.Refresh(); cpu = p.TotalProcessorTime.TotalSeconds; }
            catch (Exception e) when (e is InvalidOperationException or System.ComponentModel.Win32Exception) { } // it just exited
        }
        if (Directory.Exists(Path.Combine(dir, "out"))) Directory.Delete(Path.Combine(dir, "out"), recursive: true);
        return (sw.Elapsed.TotalSeconds, cpu, anon, hwm, p.ExitCode);
    }

    // task_t = base + noise of a tenth of each tensor's spread, in the stored dtype; config.json copied.
    static long Perturb(string baseFolder, string dir, List<string> names)
    {
        using var ckpt = Checkpoint.Open(baseFolder);
        using var g = new Generator(1, device: null);
        foreach (var name in names)
        {
            var tensors = new Dictionary<string, Tensor>();
            foreach (var n in ckpt.Names)
            {
                var w = ckpt.Load(n);
                if (!w.is_floating_point()) { tensors[n] = w; continue; }
                using var f = w.to(ScalarType.Float32);
                using var spread = f.std();
                tensors[n] = (f + randn(f.shape, generator: g) * (0.1 * spread.item<float>() + 1e-3)).to(w.dtype);
                w.Dispose();
            }
            SafetensorsWriter.SaveCheckpoint(Path.Combine(dir, name), tensors);
            foreach (var t in tensors.Values) t.Dispose();
            File.Copy(Path.Combine(baseFolder, "config.json"), Path.Combine(dir, name, "config.json"), overwrite: true);
        }
        return ckpt.Names.Sum(n => ckpt.Info(n).ByteLength);
    }

    static double StoredBytesPerValue(string folder)
    {
        using var ckpt = Checkpoint.Open(folder);
        var first = ckpt.Info(ckpt.Names.First());
        return (double)first.ByteLength / Math.Max(1, first.Shape.Aggregate(1L, (a, b) => a * b));
    }

    // A random float32 Llama of the given width and depth (vocabulary 4096), written once.
    static string Synthetic(string dir, int hidden, int layers)
    {
        var folder = Path.Combine(dir, $"llama-{hidden}x{layers}");
        if (File.Exists(Path.Combine(folder, Checkpoint.SingleFile))) return folder;
        var config = ModelConfig.Parse(JsonNode.Parse($$"""
            {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 4096, "hidden_size": {{hidden}},
             "intermediate_size": {{hidden * 8 / 3}}, "num_hidden_layers": {{layers}}, "num_attention_heads": {{hidden / 64}},
             "num_key_value_heads": {{hidden / 64}}, "rms_norm_eps": 1e-5, "tie_word_embeddings": false, "torch_dtype": "float32"}
            """)!.AsObject());
        using var model = AutoModel.Create(config);
        ModelSaving.SavePretrained(model, null, folder);
        return folder;
    }

    static long Status(int pid, string field)
    {
        try
        {
            var line = File.ReadLines($"/proc/{pid}/status").FirstOrDefault(l => l.StartsWith(field, StringComparison.Ordinal));
            return line is null ? 0 : long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
        }
        catch (IOException) { return 0; }
    }

    static string? Arg(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }
}
