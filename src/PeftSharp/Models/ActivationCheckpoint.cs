using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Models;

/// <summary>
/// Activation checkpointing (Chen et al., 2016, https://arxiv.org/abs/1604.06174): run a block without keeping
/// its activations, and run it again in the backward pass to get them back. Memory per block falls to its input;
/// the price is one more forward per block. TorchSharp has no <c>torch.utils.checkpoint</c>, so this is the
/// reentrant variant written as a custom autograd function.
/// </summary>
public static class ActivationCheckpoint
{
    /// <summary>
    /// <paramref name="block"/>(<paramref name="inputs"/>), recomputed in backward. <c>inputs[0]</c> is the hidden
    /// state; the others (RoPE tables, masks) are passed along and kept alive until backward. Gradients reach the
    /// block's parameters through the recomputation and <c>inputs[0]</c> through the return value. The random-number
    /// state is replayed so that dropout draws the same masks twice. The block must not mutate state (a KV cache).
    /// </summary>
    public static Tensor Run(Func<IReadOnlyList<Tensor?>, Tensor> block, params Tensor?[] inputs)
    {
        var hidden = inputs[0] ?? throw new ArgumentNullException(nameof(inputs), "the hidden state is required");
        // With a frozen embedding the first block's input needs no gradient, and then neither would the output
        // (the parameters' gradients would be lost): make the input a leaf that asks for one, as transformers'
        // enable_input_require_grads does.
        if (!hidden.requires_grad) inputs = [hidden.detach().requires_grad_(true), .. inputs[1..]];
        var present = inputs.Where(t => t is not null).Cast<Tensor>().ToArray();
        var slots = inputs.Select(t => t is not null).ToArray();
        return CheckpointFunction.apply([block, slots, .. present]);
    }

    /// <summary>
    /// Whether a forward of <paramref name="module"/> on <paramref name="inputs"/> should checkpoint: training with
    /// gradients on, and no KV cache (prefix tuning's is appended to by each layer, so a layer cannot be replayed).
    /// </summary>
    public static bool Applies(nn.Module module, ModelInputs inputs) => module.training && is_grad_enabled() && inputs.Cache is null;

    sealed class CheckpointFunction : autograd.SingleTensorFunction<CheckpointFunction>
    {
        public override string Name => "GradientCheckpoint";

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var block = (Func<IReadOnlyList<Tensor?>, Tensor>)vars[0];
            var slots = (bool[])vars[1];
            var tensors = vars[2..].Cast<Tensor>().ToList();
            ctx.save_for_backward(tensors);
            ctx.save_data("block", block);
            ctx.save_data("slots", slots);
            ctx.save_data("rng", RngState.Fork(tensors[0].device));
            using var _ = no_grad();
            return block(Expand(slots, tensors));
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad)
        {
            var block = (Func<IReadOnlyList<Tensor?>, Tensor>)ctx.get_data("block");
            var slots = (bool[])ctx.get_data("slots");
            var rng = (RngState)ctx.get_data("rng");
            var saved = ctx.get_saved_variables();
            var hidden = saved[0].detach().requires_grad_(true);
            var rest = saved.Skip(1).Select(t => t.detach());
            var now = RngState.Cpu();
            rng.Restore();
            using (enable_grad())
            {
                var output = block(Expand(slots, [hidden, .. rest]));
                autograd.backward([output], [grad]);
            }
            now.Restore();
            now.Dispose();
            // One gradient per argument of apply: none for the block and the slot map, the hidden state's, and none
            // for the constants that ride along.
            var grads = new List<Tensor> { null!, null!, hidden.grad ?? zeros_like(hidden) };
            grads.AddRange(Enumerable.Repeat<Tensor>(null!, saved.Count - 1));
            return grads;
        }

        static Tensor?[] Expand(bool[] slots, IReadOnlyList<Tensor> present)
        {
            var all = new Tensor?[slots.Length];
            for (int i = 0, j = 0; i < slots.Length; i++) all[i] = slots[i] ? present[j++] : null;
            return all;
        }
    }

    /// <summary>
    /// The generator state a block's dropout draws from. CPU: the generator's state itself. CUDA, whose state
    /// TorchSharp cannot read: a seed drawn from the CPU generator and set before the block runs, and set again
    /// before it is recomputed.
    /// </summary>
    sealed class RngState : IDisposable
    {
        Tensor cpuState = null!;
        long? cudaSeed;

        /// <summary>Snapshots the state a block is about to draw from (on CUDA, first seeding it).</summary>
        public static RngState Fork(Device device)
        {
            var s = new RngState { cpuState = random.get_rng_state().DetachFromDisposeScope() };
            if (device.type == DeviceType.CUDA)
            {
                using var draw = randint(0, long.MaxValue, [1], dtype: ScalarType.Int64);
                s.cudaSeed = draw.item<long>();
                cuda.manual_seed(s.cudaSeed.Value);
            }
            return s;
        }

        /// <summary>The CPU generator's state only (what the backward pass must leave as it found it).</summary>
        public static RngState Cpu() => new() { cpuState = random.get_rng_state().DetachFromDisposeScope() };

        public void Restore()
        {
            random.set_rng_state(cpuState);
            if (cudaSeed is { } seed) cuda.manual_seed(seed);
        }

        public void Dispose() => cpuState.Dispose();
    }
}
