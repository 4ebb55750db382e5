using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Models;

/// <summary>
/// Output head and causal-LM cross-entropy in one pass over chunks of tokens, so that only one chunk's logits
/// ever exist (for a 152k vocabulary, 4096 tokens of float32 logits are 2.5 GB, and their gradient as much again).
/// The gradients w.r.t. the hidden states and the head are computed chunk by chunk in the forward pass and only
/// scaled in the backward pass, as Liger-Kernel's fused linear cross-entropy does (Hsu et al., 2024).
/// Per chunk: z = (h W^T + b).float(), loss -= Σ log_softmax(z)[y], dz = softmax(z) - onehot(y), and with s = 1/count
/// on rows that have a target (0 elsewhere): dh = s * (dz.to(h) W), dW += dz^T (s * h), db += s^T dz.
/// </summary>
internal sealed class FusedLinearCrossEntropy : autograd.SingleTensorFunction<FusedLinearCrossEntropy>
{
    /// <summary>Float32 logits per chunk: small next to a model's activations, large enough to keep matmuls efficient.</summary>
    public const long DefaultChunkBytes = 256L << 20;

    public override string Name => nameof(FusedLinearCrossEntropy);

    /// <summary>Rows per chunk: <paramref name="chunkTokens"/> when positive, else as many as fit <see cref="DefaultChunkBytes"/>.</summary>
    public static long ChunkRows(long vocab, long chunkTokens) =>
        chunkTokens > 0 ? chunkTokens : Math.Max(1, DefaultChunkBytes / (vocab * sizeof(float)));

    // vars: hidden [B,T,H], weight [V,H], bias [V] or null, labels [B,T], chunk rows (long).
    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var (h, w, b, labels, rows) = ((Tensor)vars[0], (Tensor)vars[1], vars[2] as Tensor, (Tensor)vars[3], (long)vars[4]);
        var (loss, gradH, gradW, gradB) = Run(h, w, b, labels, rows, h.requires_grad, w.requires_grad, b?.requires_grad == true);
        ctx.save_for_backward([gradH!, gradW!, gradB!]);
        return loss;
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad)
    {
        var saved = ctx.get_saved_variables();
        Tensor Scale(Tensor? g) => g is null ? null! : g.mul(grad);
        return [Scale(saved[0]), Scale(saved[1]), Scale(saved[2]), null!, null!];
    }

    /// <summary>
    /// The mean loss and, where asked, the gradients of that mean w.r.t. hidden, weight and bias
    /// (in their own dtypes). Labels are shifted here: position t predicts labels[t + 1].
    /// </summary>
    internal static (Tensor Loss, Tensor? GradH, Tensor? GradW, Tensor? GradB) Run(
        Tensor hidden, Tensor weight, Tensor? bias, Tensor labels, long rows, bool wantH, bool wantW, bool wantB)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        long n = hidden.shape[0] * hidden.shape[1], dim = hidden.shape[^1];
        var h = hidden.reshape(n, dim);                                                   // [N, H]
        // The last position of each row predicts nothing: shifting the labels keeps h (and dh) unshifted views.
        var target = cat([labels[.., 1..], full(labels.shape[0], 1, Losses.IgnoreIndex, labels.dtype, labels.device)], 1).reshape(n);
        var counted = target.ne(Losses.IgnoreIndex);
        var mask = counted.to(ScalarType.Float32);                                        // [N]
        var count = mask.sum();
        var rowScale = mask.div(count.clamp_min(1));                                      // [N]: 1/count on counted rows, else 0
        var index = target.masked_fill(counted.logical_not(), 0).unsqueeze(1);            // [N, 1], a valid column on every row
        bool anyGrad = wantH || wantW || wantB;

        var lossSum = zeros(1, ScalarType.Float32, hidden.device);
        var gradH = wantH ? empty_like(h) : null;
        // Across chunks, sums of bf16 products would lose bits: accumulate dW and db in float32.
        var gradW = wantW ? zeros(weight.shape, ScalarType.Float32, weight.device) : null;
        var gradB = wantB ? zeros(bias!.shape, ScalarType.Float32, bias.device) : null;
        var minusOne = anyGrad ? full(Math.Min(rows, n), 1, -1f, ScalarType.Float32, hidden.device) : null;
        for (long start = 0; start < n; start += rows)
        {
            using var chunkScope = NewDisposeScope();
            long len = Math.Min(rows, n - start);
            var hc = h.narrow(0, start, len);                                             // [n, H]
            var idx = index.narrow(0, start, len);
            var z = nn.functional.linear(hc, weight, bias).to(ScalarType.Float32);         // [n, V], as transformers casts logits
            // log_softmax then the target's entry: cross_entropy's own arithmetic, and one pass over the chunk's logits.
            var logp = z.log_softmax(1);
            lossSum.sub_(logp.gather(1, idx).squeeze(1).mul_(mask.narrow(0, start, len)).sum());
            if (!anyGrad) continue;
            // softmax - onehot, in place; the 1/count (0 on rows without a target) scales the [n, H] results instead
            // of the [n, V] chunk.
            var dz = logp.exp_().scatter_add_(1, idx, minusOne!.narrow(0, 0, len));
            var dzh = dz.to(hidden.dtype);
            var scale = rowScale.narrow(0, start, len).unsqueeze(1);                      // [n, 1]
            // The scale is applied in float32: 1/count rounded to bfloat16 would bias every gradient alike.
            if (wantH) gradH!.narrow(0, start, len).copy_(dzh.matmul(weight).to(ScalarType.Float32).mul_(scale));
            if (wantW)
            {
                var scaledH = hc.to(ScalarType.Float32).mul(scale).to(hc.dtype);
                if (weight.dtype == ScalarType.Float32) gradW!.addmm_(dzh.t(), scaledH);
                else gradW!.add_(dzh.t().matmul(scaledH));
            }
            if (wantB) gradB!.add_(scale.t().matmul(dz).squeeze(0));
        }
        var loss = lossSum.squeeze(0).div(count); // 0 counted tokens give NaN, as cross_entropy's mean does
        return (loss.MoveToOuterDisposeScope(), gradH?.view(hidden.shape).MoveToOuterDisposeScope(),
            gradW?.to(weight.dtype).MoveToOuterDisposeScope(), gradB?.to(bias!.dtype).MoveToOuterDisposeScope());
    }
}
