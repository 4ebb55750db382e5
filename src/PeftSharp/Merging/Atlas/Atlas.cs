using System.Text.Json;
using PeftSharp.Data;
using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Training;
using static TorchSharp.torch;

namespace PeftSharp.Merging;

/// <summary>How aTLAS learns its coefficients.</summary>
/// <param name="Initial">every coefficient's starting value (0: start from the base model).</param>
public sealed record AtlasOptions(int Steps = 100, double LearningRate = 0.01, int BatchSize = 8, double Initial = 0, long Seed = 42);

/// <summary>The learned coefficients, per tensor one per task vector, and the training loss before each step.</summary>
public sealed record AtlasResult(IReadOnlyDictionary<string, double[]> Coefficients, IReadOnlyList<double> Losses);

/// <summary>
/// aTLAS (Zhang et al., "Knowledge Composition using Task Vectors with Learned Anisotropic Scaling", NeurIPS 2024,
/// https://arxiv.org/abs/2407.18242): the model is <c>W_b = base_b + sum_t lambda_{t,b} tau_{t,b}</c> for every
/// parameter block b (here: every tensor the task vectors change) and task vector t, and only the lambdas are trained,
/// by gradient descent (Adam) on a small dataset. The gradient of a coefficient is the chain rule through the one
/// weight it scales, <c>dL/dlambda_{t,b} = &lt;dL/dW_b, tau_{t,b}&gt;</c>, so each step is one ordinary backward pass
/// of the model at the current weights.
/// </summary>
public static class Atlas
{
    /// <summary>
    /// Learns the coefficients and leaves <paramref name="model"/> holding the composed weights (it must hold the base
    /// weights on entry). <paramref name="taskVectors"/>[t] maps parameter names to <c>tau_t</c>.
    /// </summary>
    public static AtlasResult LearnInPlace(PretrainedModel model, IReadOnlyList<IReadOnlyDictionary<string, Tensor>> taskVectors,
        BatchSource data, AtlasOptions o, Func<Batch, Tensor>? loss = null)
    {
        loss ??= b => Objectives.CausalLM(model, b);
        var blocks = Blocks(model, taskVectors);
        var lambdas = blocks.ToDictionary(b => b.Name, _ => Enumerable.Repeat(o.Initial, taskVectors.Count).ToArray());
        var adam = blocks.ToDictionary(b => b.Name, _ => (M: new double[taskVectors.Count], V: new double[taskVectors.Count]));
        var losses = new List<double>();
        model.train(false);   // the coefficients train, the model is only differentiated: no dropout
        try
        {
            foreach (var (_, p, _) in blocks) p.requires_grad_(true);
            int perEpoch = data.MicroBatchesPerEpoch(o.BatchSize);
            for (int step = 0; step < o.Steps; step++)
            {
                var order = data.EpochOrder(step / perEpoch, o.Seed, shuffle: true);
                using var batchScope = NewDisposeScope();
                var gradients = Gradients(model, blocks, lambdas, data.MicroBatch(order, step % perEpoch, o.BatchSize), loss, out double l);
                losses.Add(l);
                foreach (var (name, g) in gradients) AdamStep(lambdas[name], g, adam[name], step + 1, o.LearningRate);
            }
            Compose(blocks, lambdas);
        }
        finally
        {
            foreach (var (_, p, _) in blocks) { p.requires_grad_(false); ClearGrad(p); }
        }
        return new AtlasResult(lambdas, losses);
    }

    /// <summary>
    /// <c>dL/dlambda_{t,b}</c> at <paramref name="lambdas"/> on one batch, with <paramref name="model"/> holding the base
    /// weights (it holds them again on return); <paramref name="loss"/> returns the batch loss at the composed weights.
    /// </summary>
    public static Dictionary<string, double[]> Gradients(PretrainedModel model, IReadOnlyList<IReadOnlyDictionary<string, Tensor>> taskVectors,
        IReadOnlyDictionary<string, double[]> lambdas, Batch batch, Func<Batch, Tensor> loss, out double value)
    {
        var blocks = Blocks(model, taskVectors);
        foreach (var (_, p, _) in blocks) p.requires_grad_(true);
        try { return Gradients(model, blocks, lambdas, batch, loss, out value); }
        finally
        {
            using var _ = no_grad();
            foreach (var (_, p, (baseWeight, _)) in blocks) { p.requires_grad_(false); ClearGrad(p); p.copy_(baseWeight); }
        }
    }

    /// <summary>Learns from <paramref name="taskModels"/> against <paramref name="baseModel"/> and writes the composed model and atlas_coefficients.json.</summary>
    public static AtlasResult Run(string baseModel, IReadOnlyList<string> taskModels, BatchSource data, AtlasOptions o, string outputFolder)
    {
        var model = AutoModel.Load(baseModel);
        var taskVectors = taskModels.Select(folder =>
        {
            using var ckpt = Checkpoint.Open(folder);
            var tv = new Dictionary<string, Tensor>();
            foreach (var (name, p) in model.named_parameters())
                if (ckpt.Names.Contains(name) && p.is_floating_point())
                    tv[name] = ckpt.Load(name).to(p.dtype).sub_(p.detach());
            return (IReadOnlyDictionary<string, Tensor>)tv;
        }).ToList();
        var result = LearnInPlace(model, taskVectors, data, o);
        ModelSaving.SavePretrained(model, baseModel, outputFolder);
        var json = JsonSerializer.Serialize(new
        {
            task_models = taskModels,
            coefficients = result.Coefficients,
            losses = result.Losses,
        }, new JsonSerializerOptions { WriteIndented = true });
        File.WriteAllText(Path.Combine(outputFolder, "atlas_coefficients.json"), json);
        return result;
    }

    // Each block: its name, the model's parameter, the base weight and its task vectors (tau_t, or null where t leaves it).
    sealed record Block(string Name, TorchSharp.Modules.Parameter Parameter, (Tensor Base, Tensor?[] Taus) Terms)
    {
        public void Deconstruct(out string name, out TorchSharp.Modules.Parameter p, out (Tensor Base, Tensor?[] Taus) terms) =>
            (name, p, terms) = (Name, Parameter, Terms);
    }

    static List<Block> Blocks(PretrainedModel model, IReadOnlyList<IReadOnlyDictionary<string, Tensor>> taskVectors)
    {
        var blocks = new List<Block>();
        foreach (var (name, p) in model.named_parameters())
        {
            var taus = taskVectors.Select(tv => tv.TryGetValue(name, out var t) ? t : null).ToArray();
            if (taus.All(t => t is null)) { p.requires_grad_(false); continue; }
            foreach (var t in taus)
                if (t is not null && !t.shape.SequenceEqual(p.shape))
                    throw new ArgumentException($"task vector of '{name}' has shape [{string.Join(",", t.shape)}] but the model's is [{string.Join(",", p.shape)}]");
            blocks.Add(new Block(name, p, (p.detach().clone(), taus)));
        }
        return blocks;
    }

    static Dictionary<string, double[]> Gradients(PretrainedModel model, List<Block> blocks, IReadOnlyDictionary<string, double[]> lambdas,
        Batch batch, Func<Batch, Tensor> loss, out double value)
    {
        Compose(blocks, lambdas);
        foreach (var (_, p, _) in blocks) ClearGrad(p);
        using (var scope = NewDisposeScope())
        {
            var l = loss(batch);
            using (var v = l.to(ScalarType.Float64)) value = v.item<double>();
            l.backward();
        }
        var gradients = new Dictionary<string, double[]>();
        foreach (var (name, p, (_, taus)) in blocks)
        {
            using var grad = p.grad!.to(ScalarType.Float64);
            gradients[name] = taus.Select(t =>
            {
                if (t is null) return 0.0;
                using var tau = t.to(ScalarType.Float64);
                using var dot = grad.mul(tau).sum();
                return dot.item<double>();
            }).ToArray();
        }
        return gradients;
    }

    // as zero_grad(set_to_none=True); each read of .grad is a new handle, disposed here
    static void ClearGrad(TorchSharp.Modules.Parameter p)
    {
        var g = p.grad;
        if (g is null) return;
        g.Dispose();
        p.grad = null;
    }

    // W_b = base_b + sum_t lambda_{t,b} tau_{t,b}, written into the model's parameters.
    static void Compose(List<Block> blocks, IReadOnlyDictionary<string, double[]> lambdas)
    {
        using var _ = no_grad();
        foreach (var (name, p, (baseWeight, taus)) in blocks)
        {
            p.copy_(baseWeight);
            for (int t = 0; t < taus.Length; t++)
                if (taus[t] is { } tau) p.add_(tau, alpha: lambdas[name][t]);
        }
    }

    // Adam (Kingma and Ba) on one block's coefficients, in doubles: beta1 0.9, beta2 0.999, eps 1e-8.
    static void AdamStep(double[] x, double[] g, (double[] M, double[] V) state, int step, double lr)
    {
        const double B1 = 0.9, B2 = 0.999, Eps = 1e-8;
        for (int i = 0; i < x.Length; i++)
        {
            state.M[i] = B1 * state.M[i] + (1 - B1) * g[i];
            state.V[i] = B2 * state.V[i] + (1 - B2) * g[i] * g[i];
            double mHat = state.M[i] / (1 - Math.Pow(B1, step)), vHat = state.V[i] / (1 - Math.Pow(B2, step));
            x[i] -= lr * mHat / (Math.Sqrt(vHat) + Eps);
        }
    }
}
