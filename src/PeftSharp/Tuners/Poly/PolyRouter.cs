using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Poly;

/// <summary>
/// Task-to-skill routing (PEFT's <c>PolyRouter</c>): logits <c>module_logits</c> [n_tasks, n_splits * n_skills].
/// A row of task t gets z = logits[t] as [n_splits, n_skills]; in training z is a relaxed-Bernoulli sample
/// σ(z + log u - log(1-u)), u ~ U(0,1) (temperature 1), in evaluation σ(z); the weights are z / (Σ_skills z + 1e-12).
/// </summary>
public sealed class PolyRouter : nn.Module
{
    const double Eps = 1e-12;
    readonly int nTasks, nSplits, nSkills;

    Parameter module_logits;

    public PolyRouter(int nTasks, int nSplits, int nSkills, Device device) : base("PolyRouter")
    {
        (this.nTasks, this.nSplits, this.nSkills) = (nTasks, nSplits, nSkills);
        module_logits = new Parameter(empty(nTasks, nSplits * nSkills, device: device));
        RegisterComponents();
    }

    public Parameter Logits => module_logits;

    /// <summary>PEFT's reset: U(-1e-3, 1e-3).</summary>
    public void Reset()
    {
        using var _ = no_grad();
        module_logits.uniform_(-1e-3, 1e-3);
    }

    /// <summary>The mixing weights [B, n_splits, n_skills] of the rows' tasks <paramref name="taskIds"/> [B].</summary>
    /// <param name="sample">training: draw relaxed-Bernoulli samples; otherwise the sigmoid.</param>
    public Tensor Weights(Tensor? taskIds, bool sample)
    {
        if (taskIds is null)
            throw new ArgumentException("Poly routes by task: give each row's task id (ModelInputs.TaskIds; a 'task_id' in every data record)");
        using var scope = NewDisposeScope();
        var ids = taskIds.to(ScalarType.Int64).to(module_logits.device);
        long max = ids.max().item<long>(), min = ids.min().item<long>();
        if (max >= nTasks || min < 0)
            throw new ArgumentException($"Poly has n_tasks={nTasks} but a row has task id {(min < 0 ? min : max)}; task ids run from 0 to {nTasks - 1}");
        var logits = module_logits.index_select(0, ids).view(-1, nSplits, nSkills);
        Tensor z;
        if (sample)
        {
            // torch.distributions' RelaxedBernoulli: uniforms clamped away from 0 and 1, the sigmoid clamped likewise.
            var eps = torch.finfo(logits.dtype).eps;
            var u = rand_like(logits).clamp(eps, 1 - eps);
            z = sigmoid(logits + u.log() - (-u).log1p()).clamp(torch.finfo(logits.dtype).tiny, 1 - eps);
        }
        else z = sigmoid(logits);
        return (z / (z.sum(-1, keepdim: true) + Eps)).MoveToOuterDisposeScope();
    }
}
