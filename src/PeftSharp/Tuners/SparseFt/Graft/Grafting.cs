using PeftSharp.Data;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.SparseFt.Graft;

/// <summary>How <see cref="Grafting.Learn"/> searches for the graft.</summary>
public sealed record GraftOptions
{
    /// <summary>Share of each target weight's entries grafted: K = ceil(density x numel).</summary>
    public double Density { get; init; } = 0.01;
    public ModuleSelector TargetModules { get; init; } = ModuleSelector.Of("all-linear");
    /// <summary>Mask updates (one micro-batch each).</summary>
    public int Steps { get; init; } = 100;
    /// <summary>Adam's step on the mask logits S.</summary>
    public double LearningRate { get; init; } = 0.5;
    public int BatchSize { get; init; } = 4;
    /// <summary>β in γ = b + (1 − 2b) σ(S − β) (their sigmoid_bias): the mask starts at b, the top-K of |θ_ft − θ_pre|.</summary>
    public double SigmoidBias { get; init; } = 10;
    /// <summary>λ of the sparsity term λ · mean(γ), which lets entries that do not matter leave the graft.</summary>
    public double SparsityPenalty { get; init; } = 1e-3;
    public long Seed { get; init; }
}

/// <summary>
/// Skill localization by grafting (Panigrahi et al. 2023, "Task-Specific Skill Localization in Fine-tuned Language
/// Models", https://arxiv.org/abs/2302.06600; code: abhishekpanigrahi1996/Skill-Localization-by-grafting): find a tiny
/// region γ of the weights such that the graft θ_pre + γ ⊙ (θ_ft − θ_pre) recovers the fine-tuned model's loss,
/// min_γ L(θ_pre + γ ⊙ (θ_ft − θ_pre)) + λ mean(γ). γ is relaxed as in their code, γ = b + (1 − 2b) σ(S − β), with b the
/// top-K of |θ_ft − θ_pre| (their "highest movement" start) and S ~ U[0, 1); S moves by Adam (their code takes plain
/// gradient steps, whose size depends on the gradients' scale), and the graft is then thresholded to the budget:
/// the K entries of largest γ per target weight. The result is a sparse delta (method "graft") of θ_ft − θ_pre on them.
/// </summary>
public static class Grafting
{
    /// <summary>
    /// A model holding the graft of <paramref name="tuned"/> onto <paramref name="baseModel"/> as adapter "default";
    /// <paramref name="tuned"/> must have the base model's architecture (same names and shapes).
    /// </summary>
    public static PeftModel Learn(PretrainedModel baseModel, PretrainedModel tuned, BatchSource data, GraftOptions o, Action<int, double>? log = null)
    {
        if (!(o.Density > 0 && o.Density <= 1)) throw new ArgumentException($"graft density must be in (0, 1], got {o.Density}");
        if (o.Steps < 0) throw new ArgumentException($"graft steps must be 0 or more, got {o.Steps}");
        var config = new SparseFtConfig { Method = "graft", Density = o.Density, TargetModules = o.TargetModules, TaskType = "CAUSAL_LM" };
        var pm = PeftModel.Create(baseModel, config with { Loading = true });
        var targets = SparseFtTuner.Targets(pm, "default");
        var tunedWeights = tuned.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        var masks = targets.Select((t, i) => MaskFor(t, tunedWeights, o.Seed + i)).ToList();
        var model = Methods.Trainable(pm, "causal_lm");
        using (var adam = optim.Adam(masks.Select(m => m.Logits), o.LearningRate, eps: 1e-15))
        {
            pm.Base.eval();
            for (int step = 0; step < o.Steps; step++)
            {
                using var scope = NewDisposeScope();
                int perEpoch = data.MicroBatchesPerEpoch(o.BatchSize);
                var batch = data.MicroBatch(data.EpochOrder(step / perEpoch, o.Seed, shuffle: true), step % perEpoch, o.BatchSize);
                var gammas = masks.Select(m => m.Gamma(o.SigmoidBias)).ToList();
                // The delta's probe is added to W in the forward: here it carries γ ⊙ (θ_ft − θ_pre), differentiable in S.
                for (int i = 0; i < targets.Count; i++) targets[i].Delta.Probe = gammas[i] * masks[i].Direction;
                var task = model.ComputeLoss(batch);
                var loss = task + o.SparsityPenalty * cat(gammas.Select(g => g.flatten()).ToList()).mean();
                adam.zero_grad();
                loss.backward();
                adam.step();
                log?.Invoke(step + 1, task.item<float>());
            }
        }
        using (no_grad())
            for (int i = 0; i < targets.Count; i++)
            {
                using var scope = NewDisposeScope();
                var d = targets[i].Delta;
                d.Probe = null;
                var support = SparseWeightDelta.TopK(masks[i].Gamma(o.SigmoidBias), d.K);
                d.Indices.copy_(support);
                d.Values.copy_(masks[i].Direction.flatten().index_select(0, support));
                masks[i].Logits.Dispose();
            }
        return pm;
    }

    /// <summary>The mask of one target: its direction θ_ft − θ_pre, start b and logits S.</summary>
    sealed record Mask(Tensor Direction, Tensor Start, Parameter Logits)
    {
        public Tensor Gamma(double beta) => Start + (1 - 2 * Start) * sigmoid(Logits - beta);
    }

    static Mask MaskFor(SparseTarget t, Dictionary<string, Parameter> tuned, long seed)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var name = t.Path + ".weight";
        if (!tuned.TryGetValue(name, out var ft))
            throw new ArgumentException($"the fine-tuned model has no weight '{name}': is it the same architecture as the base model?");
        if (!ft.shape.SequenceEqual(t.Weight.shape))
            throw new ArgumentException($"the fine-tuned weight '{name}' has shape {AdapterTensors.Shape(ft)} but the base model's is {AdapterTensors.Shape(t.Weight)}");
        var direction = (ft.detach().to(ScalarType.Float32) - t.Weight.detach().to(ScalarType.Float32)).to(t.Weight.device);
        var start = zeros(t.Delta.Numel, device: direction.device).index_fill_(0, SparseWeightDelta.TopK(direction.abs(), t.Delta.K), 1).view(direction.shape);
        using var g = new Generator((ulong)seed);
        var logits = new Parameter(rand(direction.shape, generator: g).to(direction.device));
        return new Mask(direction.DetachFromDisposeScope(), start.DetachFromDisposeScope(), (Parameter)logits.DetachFromDisposeScope());
    }
}
