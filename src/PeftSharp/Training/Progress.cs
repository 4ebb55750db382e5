using System.Diagnostics;
using System.Globalization;
using Spectre.Console;

namespace PeftSharp.Training;

/// <summary>Receives what the trainer does, to show it. Called on the training thread.</summary>
public interface IProgressSink
{
    void Start(TrainingPlan plan);
    void Step(StepRecord step);
    void Eval(EvalRecord eval);
    /// <summary>A line worth telling (a checkpoint written, a stop).</summary>
    void Message(string text);
    void End(TrainingResult result);
}

/// <summary>Picks the display: a live progress bar on a terminal, plain lines when output is redirected (logs, CI).</summary>
public static class ProgressSinks
{
    public static IProgressSink ForConsole(int loggingSteps = 10) =>
        Console.IsOutputRedirected ? new PlainProgress(Console.Out, loggingSteps) : new SpectreProgress(AnsiConsole.Console);

    /// <summary>Shows nothing (tests, library use).</summary>
    public static IProgressSink None { get; } = new NoProgress();

    sealed class NoProgress : IProgressSink
    {
        public void Start(TrainingPlan plan) { }
        public void Step(StepRecord step) { }
        public void Eval(EvalRecord eval) { }
        public void Message(string text) { }
        public void End(TrainingResult result) { }
    }

    internal static string Describe(StepRecord r, int total) => string.Create(CultureInfo.InvariantCulture,
        $"step {r.Step}/{total}  loss {r.Loss:F4}  lr {r.LearningRate:0.00e+00}  {r.TokensPerSecond:F0} tok/s");

    internal static string Describe(EvalRecord e) => string.Create(CultureInfo.InvariantCulture,
        $"eval after step {e.Step}: loss {e.Loss:F4}  perplexity {e.Perplexity:F2}");

    internal static string Duration(TimeSpan t) =>
        t.TotalHours >= 1 ? $"{(int)t.TotalHours}h{t.Minutes:00}m" : t.TotalMinutes >= 1 ? $"{(int)t.TotalMinutes}m{t.Seconds:00}s" : $"{t.Seconds}s";
}

/// <summary>One line every <c>everySteps</c> steps (and the first and last), with an ETA from the average step time.</summary>
public sealed class PlainProgress(TextWriter output, int everySteps = 10) : IProgressSink
{
    readonly Stopwatch clock = new();
    TrainingPlan? plan;

    public void Start(TrainingPlan p)
    {
        plan = p;
        clock.Restart();
        output.WriteLine($"training {p.TotalSteps - p.StartStep} steps" + (p.StartStep > 0 ? $" (resuming after step {p.StartStep})" : "") +
            $" on {p.TrainRows} rows, {p.EffectiveBatchSize} per step");
    }

    public void Step(StepRecord r)
    {
        var p = plan!;
        var done = r.Step - p.StartStep;
        if (!(done == 1 || r.Step == p.TotalSteps || (everySteps > 0 && r.Step % everySteps == 0))) return;
        var eta = TimeSpan.FromTicks(clock.Elapsed.Ticks / Math.Max(1, done) * (p.TotalSteps - r.Step));
        output.WriteLine($"{ProgressSinks.Describe(r, p.TotalSteps)}  eta {ProgressSinks.Duration(eta)}");
    }

    public void Eval(EvalRecord e) => output.WriteLine(ProgressSinks.Describe(e));
    public void Message(string text) => output.WriteLine(text);
    public void End(TrainingResult result) => output.Flush();
}

/// <summary>
/// A Spectre.Console progress bar (description with step, loss, lr and tokens/s; bar; percentage; remaining time).
/// Spectre renders from inside a callback, so the bar lives on a background task for the length of the run;
/// lines written meanwhile appear above it.
/// </summary>
public sealed class SpectreProgress(IAnsiConsole console) : IProgressSink
{
    TaskCompletionSource? finished;
    Task? rendering;
    ProgressTask? bar;
    int total;

    public void Start(TrainingPlan plan)
    {
        total = plan.TotalSteps;
        finished = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var ready = new ManualResetEventSlim();
        rendering = console.Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(),
                new RemainingTimeColumn(), new SpinnerColumn())
            .StartAsync(async ctx =>
            {
                bar = ctx.AddTask(Markup.Escape($"step {plan.StartStep}/{total}"), maxValue: Math.Max(1, total));
                bar.Value = plan.StartStep;
                ready.Set();
                await finished.Task;
                bar.StopTask();
            });
        ready.Wait();
    }

    public void Step(StepRecord r)
    {
        bar!.Description = Markup.Escape(ProgressSinks.Describe(r, total));
        bar.Value = r.Step;
    }

    public void Eval(EvalRecord e) => console.MarkupLine(Markup.Escape(ProgressSinks.Describe(e)));
    public void Message(string text) => console.MarkupLine(Markup.Escape(text));

    public void End(TrainingResult result)
    {
        finished?.TrySetResult();
        rendering?.GetAwaiter().GetResult();
    }
}
