using PeftSharp.Data;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Training;
using PeftSharp.Tuners;
using PeftSharp.Tuners.SparseFt;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Tests.SparseFt;

/// <summary>What the sparse fine-tuning tests share (SPARSE_FT's methods, DSEE, grafting): tiny-llama, a few rows, and steps taken as the trainer takes them.</summary>
internal static class SparseFtRig
{
    public static PretrainedModel TinyLlama() => AutoModel.Load(Repo.Fixture("models", "tiny-llama"));

    public static BatchSource Data(int rows = 4, int length = 16, ulong seed = 7)
    {
        using var g = new Generator(seed);
        using var ids = randint(2, 512, [rows, length], generator: g);
        return BatchSource.FromInputIds(ids);
    }

    public static SparseFtConfig Config(string method, params string[] targets) => new()
    {
        Method = method, Density = 0.05, TargetModules = ModuleSelector.Of(targets.Length > 0 ? targets : ["q_proj", "v_proj", "down_proj"]),
    };

    public static PeftModel Create(PeftConfig c, PretrainedModel? model = null)
    {
        manual_seed(1);
        return PeftModel.Create(model ?? TinyLlama(), c);
    }

    public static TrainingOptions Options(int steps, string? outDir = null) => new()
    {
        MaxSteps = steps, LearningRate = 1e-2, WarmupRatio = 0, PerDeviceTrainBatchSize = 2, Optim = "adamw_torch",
        OutputDir = outDir, LoggingSteps = 0,
    };

    public static TrainingResult Train(PeftModel pm, TrainingOptions o) =>
        Trainer.Run(Methods.Trainable(pm, "causal_lm"), Data(), null, o, new TrainerHooks { HandleCtrlC = false });

    /// <summary>
    /// Steps the way the trainer does (loss with the method's extra term, backward, AdamW at <see cref="Lr"/>, the method's
    /// hook, stale state zeroed, frozen state dropped), calling <paramref name="beforeHook"/> before each hook.
    /// </summary>
    public sealed class Stepper
    {
        readonly TrainableModel model;
        readonly Batch batch;
        public readonly PeftSharp.Training.AdamW Optimizer;
        int step;

        public Stepper(PeftModel pm, double lr = 1e-2)
        {
            Lr = lr;
            model = Methods.Trainable(pm, "causal_lm");
            Optimizer = new PeftSharp.Training.AdamW(model.Parameters, weightDecay: 0);
            var data = Data();
            batch = data.MicroBatch(data.EpochOrder(0, 0, shuffle: false), 0, 4);
            pm.Base.train();
        }

        public double Lr { get; }
        public IReadOnlyList<(string Name, Parameter P)> Parameters => model.Parameters;

        public void Step(Action<int>? beforeHook = null)
        {
            step++;
            using (var scope = NewDisposeScope()) model.ComputeLoss(batch).backward();
            Optimizer.Step(Lr);
            beforeHook?.Invoke(step);
            model.AfterOptimizerStep?.Invoke(step);
            foreach (var (p, entries) in model.StaleOptimizerEntries?.Invoke() ?? []) Optimizer.ResetEntries(model.Parameters.First(x => x.P.Handle == p.Handle).Name, entries);
            Optimizer.DropState(model.Parameters.Where(p => !p.P.requires_grad).Select(p => p.Name));
            Optimizer.ZeroGrad();
        }
    }

    public static HashSet<long> Set(Tensor indices) => indices.cpu().data<long>().ToHashSet();
}
