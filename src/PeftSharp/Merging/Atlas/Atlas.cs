using PeftSharp.Data;
using PeftSharp.Models;
using PeftSharp.Training;
using static TorchSharp.torch;

namespace PeftSharp.Merging;

/// <summary>How aTLAS learns its coefficients (YAML <c>parameters:</c> steps, learning_rate, batch_size, init_lambda, seed).</summary>
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
public static partial class Atlas
{
    /// <summary>
    /// Learns the coefficients and leaves <paramref name="model"/> holding the composed weights (it must hold the base
    /// weights on entry). <paramref name="taskVectors"/>[t] maps parameter names to <c>tau_t</c>.
    /// </summary>
    public static AtlasResult LearnInPlace(PretrainedModel model, IReadOnlyList<IReadOnlyDictionary<string, Tensor>> taskVectors,
        BatchSource data, AtlasOptions o, Func<Batch, Tensor>? loss = null)
    {
        using var terms = new HeldTerms(model, taskVectors);
        return Learn(model, terms, data, o, loss ?? (b => Objectives.CausalLM(model, b)), progress: null);
    }

    /// <summary>
    /// <c>dL/dlambda_{t,b}</c> at <paramref name="lambdas"/> on one batch, with <paramref name="model"/> holding the base
    /// weights (it holds them again on return); <paramref name="loss"/> returns the batch loss at the composed weights.
    /// </summary>
    public static Dictionary<string, double[]> Gradients(PretrainedModel model, IReadOnlyList<IReadOnlyDictionary<string, Tensor>> taskVectors,
        IReadOnlyDictionary<string, double[]> lambdas, Batch batch, Func<Batch, Tensor> loss, out double value)
    {
        using var terms = new HeldTerms(model, taskVectors);
        foreach (var b in terms.Blocks) b.Parameter.requires_grad_(true);
        try
        {
            foreach (var b in terms.Blocks) Compose(terms, b, lambdas[b.Name]);
            value = Backward(terms.Blocks, batch, loss);
            var gradients = new Dictionary<string, double[]>();
            foreach (var b in terms.Blocks)
            {
                using var scope = NewDisposeScope();
                var baseWeight = terms.Base(b);
                gradients[b.Name] = Dots(b, Taus(terms, b, baseWeight));
            }
            return gradients;
        }
        finally
        {
            using var _ = no_grad();
            foreach (var b in terms.Blocks) { b.Parameter.requires_grad_(false); ClearGrad(b.Parameter); b.Parameter.copy_(terms.Base(b)); }
        }
    }

    /// <summary>
    /// The training loop. Each step is one backward pass at the current weights, then one pass over the blocks that
    /// reads each block's terms once: the coefficients' gradients, their Adam step, and the block's next weight. So the
    /// terms may come from disk one tensor at a time (<see cref="StreamedTerms"/>).
    /// </summary>
    static AtlasResult Learn(PretrainedModel model, IAtlasTerms terms, BatchSource data, AtlasOptions o, Func<Batch, Tensor> loss,
        Action<int, double>? progress)
    {
        var blocks = terms.Blocks;
        var lambdas = blocks.ToDictionary(b => b.Name, _ => Enumerable.Repeat(o.Initial, terms.Tasks).ToArray());
        var adam = blocks.ToDictionary(b => b.Name, _ => (M: new double[terms.Tasks], V: new double[terms.Tasks]));
        var losses = new List<double>();
        model.train(false);   // the coefficients train, the model is only differentiated: no dropout
        try
        {
            foreach (var b in blocks) b.Parameter.requires_grad_(true);
            foreach (var b in blocks) Compose(terms, b, lambdas[b.Name]);
            int perEpoch = data.MicroBatchesPerEpoch(o.BatchSize);
            for (int step = 0; step < o.Steps; step++)
            {
                var order = data.EpochOrder(step / perEpoch, o.Seed, shuffle: true);
                using (var batchScope = NewDisposeScope())
                    losses.Add(Backward(blocks, data.MicroBatch(order, step % perEpoch, o.BatchSize), loss));
                progress?.Invoke(step + 1, losses[^1]);
                foreach (var b in blocks)
                {
                    using var scope = NewDisposeScope();
                    var baseWeight = terms.Base(b);
                    var taus = Taus(terms, b, baseWeight);
                    var g = Dots(b, taus);
                    ClearGrad(b.Parameter);
                    AdamStep(lambdas[b.Name], g, adam[b.Name], step + 1, o.LearningRate);
                    Compose(b, baseWeight, taus, lambdas[b.Name]);
                }
            }
        }
        finally
        {
            foreach (var b in blocks) { b.Parameter.requires_grad_(false); ClearGrad(b.Parameter); }
        }
        return new AtlasResult(lambdas, losses);
    }

    // The loss of one batch at the model's current weights, and its gradients in the blocks' parameters.
    static double Backward(IReadOnlyList<AtlasBlock> blocks, Batch batch, Func<Batch, Tensor> loss)
    {
        foreach (var b in blocks) ClearGrad(b.Parameter);
        using var scope = NewDisposeScope();
        var l = loss(batch);
        double value;
        using (var v = l.to(ScalarType.Float64)) value = v.item<double>();
        l.backward();
        return value;
    }

    static Tensor?[] Taus(IAtlasTerms terms, AtlasBlock b, Tensor baseWeight) =>
        Enumerable.Range(0, terms.Tasks).Select(t => b.Changed[t] ? terms.Tau(b, t, baseWeight) : null).ToArray();

    // dL/dlambda_{t,b} = <dL/dW_b, tau_{t,b}>, summed in doubles.
    static double[] Dots(AtlasBlock b, Tensor?[] taus)
    {
        using var grad = b.Parameter.grad!.to(ScalarType.Float64);
        return taus.Select(t =>
        {
            if (t is null) return 0.0;
            using var tau = t.to(ScalarType.Float64);
            using var dot = grad.mul(tau).sum();
            return dot.item<double>();
        }).ToArray();
    }

    // as zero_grad(set_to_none=True); each read of .grad is a new handle, disposed here
    static void ClearGrad(TorchSharp.Modules.Parameter p)
    {
        var g = p.grad;
        if (g is null) return;
        g.Dispose();
        p.grad = null;
    }

    static void Compose(IAtlasTerms terms, AtlasBlock b, double[] lambdas)
    {
        using var scope = NewDisposeScope();
        var baseWeight = terms.Base(b);
        Compose(b, baseWeight, Taus(terms, b, baseWeight), lambdas);
    }

    // W_b = base_b + sum_t lambda_{t,b} tau_{t,b}, written into the model's parameter.
    static void Compose(AtlasBlock b, Tensor baseWeight, Tensor?[] taus, double[] lambdas)
    {
        using var _ = no_grad();
        b.Parameter.copy_(baseWeight);
        for (int t = 0; t < taus.Length; t++)
            if (taus[t] is { } tau) b.Parameter.add_(tau, alpha: lambdas[t]);
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
