using System.CommandLine;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tuners.Poly;
using static TorchSharp.torch;

namespace PeftSharp.Cli;

/// <summary>
/// <c>--task-id N</c> (generate, logits): every row runs with task N's routing of a Poly/MHR adapter, as
/// <c>peft.Routing.Use(ids)</c> does in the library (PEFT passes <c>task_ids</c> to <c>generate</c> and <c>forward</c>).
/// </summary>
internal static class TaskRouting
{
    public static Option<int?> Option() =>
        Options.WholeNumber("--task-id", "the task whose routing a Poly/MHR adapter uses for every row (0 to its n_tasks - 1); Poly adapters need it")
            .Must(n => n >= 0, "must be 0 or more");

    /// <summary>
    /// Checks <paramref name="task"/> against the loaded adapters and, until disposed, routes all <paramref name="rows"/> as that task.
    /// A task-routed adapter without a task, or a task for an adapter that does not route by task, is an error naming the adapter.
    /// </summary>
    public static IDisposable Use(ILanguageModel model, int? task, int rows)
    {
        var pm = model as PeftModel;
        var polys = pm is null ? [] : pm.Configs.Where(c => c.Value is PolyConfig).Select(c => (c.Key, Config: (PolyConfig)c.Value)).ToList();
        if (task is not int t)
        {
            if (polys.FirstOrDefault(p => pm!.ActiveAdapters.Contains(p.Key)) is ({ } name, { } c))
                throw new ArgumentException($"adapter '{name}' (POLY) routes by task: give --task-id N, from 0 to {c.NTasks - 1} (its n_tasks is {c.NTasks})");
            return Nothing.Instance;
        }
        if (pm is null) throw new ArgumentException("--task-id chooses a Poly/MHR adapter's task routing: give --adapter DIR");
        if (polys.Count == 0)
        {
            var (name, config) = pm.Configs.First();
            throw new ArgumentException($"--task-id {t}: adapter '{name}' is {config.PeftType}, which does not route by task; --task-id is for Poly/MHR (POLY) adapters");
        }
        if (polys.FirstOrDefault(p => t >= p.Config.NTasks) is ({ } small, { } sc))
            throw new ArgumentException($"--task-id {t}: adapter '{small}' (POLY) has n_tasks={sc.NTasks}; give a task id from 0 to {sc.NTasks - 1}");
        var ids = full(rows, (long)t, ScalarType.Int64);
        var scope = pm.Routing.Use(ids);
        return new Undo(() => { scope.Dispose(); ids.Dispose(); });
    }

    sealed class Undo(Action undo) : IDisposable
    {
        public void Dispose() => undo();
    }

    sealed class Nothing : IDisposable
    {
        public static readonly Nothing Instance = new();
        public void Dispose() { }
    }
}
