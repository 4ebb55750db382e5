using PeftSharp.Data;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Tests;

/// <summary>
/// A tiny causal language model for testing data and training code without a real transformer.
/// logits_t = W[x_t] + P[pos_t] + mean of C[x_j] over the earlier tokens j &lt;= t of the same segment, then dropout.
/// The context term makes it sensitive to what a token may attend to, and P to position ids, so packing mistakes
/// (attention across examples, positions that do not restart) change its losses.
/// </summary>
internal sealed class ToyLm : IDisposable
{
    public readonly int Vocab;
    public readonly Parameter W, P, C;
    public double Dropout { get; init; }
    public bool Training { get; set; } = true;

    public ToyLm(long seed, int vocab = 140, int maxPositions = 64)
    {
        Vocab = vocab;
        using var g = new Generator((ulong)seed);
        W = new Parameter(randn(vocab, vocab, generator: g) * 0.1f);
        P = new Parameter(randn(maxPositions, vocab, generator: g) * 0.1f);
        C = new Parameter(randn(vocab, vocab, generator: g) * 0.1f);
    }

    public IReadOnlyList<(string Name, Parameter P)> Parameters => [("w", W), ("p", P), ("c", C)];

    /// <summary>The toy as the trainer sees it; the "adapter" is all three tensors in one safetensors file.</summary>
    public PeftSharp.Training.TrainableModel AsTrainable(Func<Batch, Tensor>? loss = null) =>
        new(Parameters, loss ?? Loss, folder => PeftSharp.IO.SafetensorsWriter.Save(Path.Combine(folder, "adapter_model.safetensors"),
            Parameters.ToDictionary(p => p.Name, p => (Tensor)p.P)))
        { SetTrainingMode = on => Training = on };

    public Tensor Logits(Batch b)
    {
        var (bs, t) = (b.InputIds.shape[0], b.InputIds.shape[1]);
        var flat = b.InputIds.flatten();
        var pos = b.PositionIds ?? arange(t, dtype: ScalarType.Int64).expand(bs, t);
        var segments = b.SegmentIds ?? b.AttentionMask;                                   // unpacked: one segment of real tokens
        var mask = Batch.BlockCausalMask(segments).squeeze(1).to(ScalarType.Float32);     // [B,T,T]
        var context = C.index_select(0, flat).view(bs, t, Vocab);                         // [B,T,V]
        var mixed = mask.bmm(context) / mask.sum(-1, keepdim: true).clamp_min(1);
        var logits = W.index_select(0, flat).view(bs, t, Vocab) + P.index_select(0, pos.flatten()).view(bs, t, Vocab) + mixed;
        return Dropout > 0 ? nn.functional.dropout(logits, Dropout, Training) : logits;
    }

    /// <summary>Cross-entropy of each position's prediction of the next label: [B, T-1], 0 where ignored.</summary>
    public Tensor TokenLosses(Batch b)
    {
        var logits = Logits(b);
        var t = logits.shape[1];
        var predict = logits.narrow(1, 0, t - 1).reshape(-1, Vocab);
        var target = b.Labels!.narrow(1, 1, t - 1).reshape(-1);
        return nn.functional.cross_entropy(predict, target, ignore_index: -100, reduction: nn.Reduction.None).view(b.InputIds.shape[0], t - 1);
    }

    /// <summary>The mean over trained tokens, as transformers' causal-LM loss.</summary>
    public Tensor Loss(Batch b)
    {
        var logits = Logits(b);
        var t = logits.shape[1];
        return nn.functional.cross_entropy(logits.narrow(1, 0, t - 1).reshape(-1, Vocab), b.Labels!.narrow(1, 1, t - 1).reshape(-1), ignore_index: -100);
    }

    public void Dispose()
    {
        W.Dispose();
        P.Dispose();
        C.Dispose();
    }
}
