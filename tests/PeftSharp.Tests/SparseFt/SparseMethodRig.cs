using PeftSharp.Data;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Training;
using PeftSharp.Tuners;
using PeftSharp.Tuners.SparseFt;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Tests.SparseFt;

/// <summary>What the tests of SaRA, S²FT, DSEE and grafting share: tiny-llama, a few rows, and steps taken as the trainer takes them.</summary>
internal static class SparseMethodRig
{
    public static PretrainedModel TinyLlama() => AutoModel.Load(Repo.Fixture("models", "tiny-llama"));

    public static BatchSource Data(int rows = 4, int length = 16, ulong seed = 7)
    {
        using var g = new Generator(seed);
        using var ids = randint(2, 512, [rows, length], generator: g);
        return BatchSource.FromInputIds(ids);
    }

    public static PeftModel Create(PeftConfig c, PretrainedModel? model = null)
    {
        manual_seed(1);
        return PeftModel.Create(model ?? TinyLlama(), c);
    }

    public static TrainingOptions Options(int steps) => new()
    {
        MaxSteps = steps, LearningRate = 1e-2, WarmupRatio = 0, PerDeviceTrainBatchSize = 2, Optim = "adamw_torch", LoggingSteps = 0, OutputDir = null,
    };

    public static TrainingResult Train(PeftModel pm, TrainingOptions o) =>
        Trainer.Run(Methods.Trainable(pm, "causal_lm"), Data(), null, o, new TrainerHooks { HandleCtrlC = false });

    /// <summary>Steps the way the trainer does: loss with the method's extra term, backward, AdamW, the method's hook.</summary>
    public sealed class Stepper
    {
        readonly TrainableModel model;
        readonly Batch batch;
        public readonly PeftSharp.Training.AdamW Optimizer;
        int step;

        public Stepper(PeftModel pm, double lr = 1e-2)
        {
            model = Methods.Trainable(pm, "causal_lm");
            Optimizer = new PeftSharp.Training.AdamW(model.Parameters, weightDecay: 0);
            Lr = lr;
            var data = Data();
            batch = data.MicroBatch(data.EpochOrder(0, 0, shuffle: false), 0, 4);
            pm.Base.train();
        }

        public double Lr { get; }
        public IReadOnlyList<(string Name, Parameter P)> Parameters => model.Parameters;

        public void Step()
        {
            using var scope = NewDisposeScope();
            step++;
            model.ComputeLoss(batch).backward();
            Optimizer.Step(Lr);
            model.AfterOptimizerStep?.Invoke(step);
            foreach (var (p, entries) in model.StaleOptimizerEntries?.Invoke() ?? []) Optimizer.ResetEntries(model.Parameters.First(x => x.P.Handle == p.Handle).Name, entries);
            Optimizer.ZeroGrad();
        }
    }

    public static HashSet<long> Set(Tensor indices) => indices.cpu().data<long>().ToHashSet();
}
