using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Lora;

/// <summary>LoRA weight initialisations, as PEFT's <c>init_lora_weights</c> values.</summary>
internal static class LoraInit
{
    public static void Initialise(LoraLayer layer, string a, LoraConfig c)
    {
        using var _ = no_grad();
        var init = c.InitLoraWeights;
        if (init == "false") return; // keep the random init of both A and B (useful for tests)
        if (init.StartsWith("pissa", StringComparison.Ordinal)) { Pissa(layer, a, init); return; }
        if (init == "olora") { Olora(layer, a); return; }
        if (init == "orthogonal") { Orthogonal(layer, a); return; }
        // The data-aware inits start as plain LoRA (the model unchanged) until their calibration sets A, B and the base.
        if (init is "eva" or "corda" or "lora_ga") init = "true";
        if (init is not ("true" or "gaussian"))
            throw new ArgumentException($"init_lora_weights '{init}' is not supported; use true, false, gaussian, pissa, pissa_niter_N, olora, orthogonal, eva, corda or lora_ga");
        if (layer.Kind == BaseKind.Embedding)
        {
            // PEFT: A zero, B normal, so the embedding starts unchanged.
            layer.A(a).zero_();
            layer.B(a).normal_();
            return;
        }
        if (init == "gaussian") layer.A(a).normal_(0, 1.0 / layer.Rank(a));
        else nn.init.kaiming_uniform_(layer.A(a), Math.Sqrt(5));
        layer.B(a).zero_();
    }

    /// <summary>
    /// PiSSA (Meng et al., 2024, https://arxiv.org/abs/2404.02948): A and B take the top-r singular directions of W,
    /// and the base keeps the residual W - s B A, so the model starts unchanged.
    /// </summary>
    static void Pissa(LoraLayer layer, string a, string init)
    {
        using var scope = NewDisposeScope();
        int r = layer.Rank(a);
        double s = layer.Scaling(a);
        var weight = BaseLayers.Weight(layer.Base);
        var w = BaseLayers.WeightOutIn(layer.Base).to(ScalarType.Float32);
        Tensor vr, sr, uhr;
        if (init == "pissa")
        {
            var (u, sv, vh) = linalg.svd(w, fullMatrices: false);
            vr = u[.., ..r];
            sr = sv[..r] / s;
            uhr = vh[..r];
        }
        else
        {
            if (!int.TryParse(init["pissa_niter_".Length..], out var niter) || !init.StartsWith("pissa_niter_", StringComparison.Ordinal))
                throw new ArgumentException($"init_lora_weights '{init}': expected pissa or pissa_niter_<N>");
            var (u, sv, v) = RandomizedSvd.LowRank(w, r, niter);
            vr = u;
            sr = sv / s;
            uhr = v.t();
        }
        var sq = diag(sqrt(sr));
        var loraA = sq.matmul(uhr);
        var loraB = vr.matmul(sq);
        layer.A(a).copy_(loraA);
        layer.B(a).copy_(loraB);
        layer.RecordInitial(a);
        var residual = w - s * loraB.matmul(loraA);
        weight.copy_(BaseLayers.ToStorage(layer.Base, residual).to(weight.dtype));
    }

    /// <summary>
    /// PEFT's "orthogonal" init (https://datta0.github.io/posts/rethink-lora-init/#orthogonal-initialisation): Q, a random
    /// r x r orthogonal matrix, split into its even rows Q_e and odd rows Q_o; A = (G1 Q_e)^T / 10, B = G2^T Q_o / 10 with
    /// G1 [in, r/2] and G2 [r/2, out] Gaussian. Both are nonzero, yet B A = G2^T Q_o Q_e^T G1^T / 100 = 0 because distinct
    /// rows of Q are orthogonal: the model starts unchanged and both factors get gradients at once. r must be even.
    /// </summary>
    static void Orthogonal(LoraLayer layer, string a)
    {
        if (layer.Kind == BaseKind.Embedding) throw new NotSupportedException("init_lora_weights 'orthogonal' applies to Linear and Conv1D layers, not embeddings");
        int r = layer.Rank(a);
        if (r % 2 != 0) throw new ArgumentException($"init_lora_weights 'orthogonal' needs an even rank (PEFT's rule), got r = {r}");
        using var scope = NewDisposeScope();
        var (inFeatures, outFeatures) = (layer.A(a).shape[1], layer.B(a).shape[0]);
        var q = linalg.qr(randn(r, r)).Q;
        var qEven = q[TensorIndex.Slice(0, null, 2)];   // PEFT's "odd rows" Q[0::2], counted from 1
        var qOdd = q[TensorIndex.Slice(1, null, 2)];
        var loraA = randn(inFeatures, r / 2).matmul(qEven).t() / 10.0;
        var loraB = randn(r / 2, outFeatures).t().matmul(qOdd) / 10.0;
        layer.A(a).copy_(loraA);
        layer.B(a).copy_(loraB);
    }

    /// <summary>OLoRA (Büyükakyüz, 2024, https://arxiv.org/abs/2406.01775): A, B from the QR decomposition of W.</summary>
    static void Olora(LoraLayer layer, string a)
    {
        using var scope = NewDisposeScope();
        int r = layer.Rank(a);
        double s = layer.Scaling(a);
        var weight = BaseLayers.Weight(layer.Base);
        var w = BaseLayers.WeightOutIn(layer.Base).to(ScalarType.Float32);
        var (q, rr) = linalg.qr(w);
        var loraB = q[.., ..r].contiguous();
        var loraA = rr[..r].contiguous();
        layer.A(a).copy_(loraA);
        layer.B(a).copy_(loraB);
        layer.RecordInitial(a);
        var residual = w - s * loraB.matmul(loraA);
        weight.copy_(BaseLayers.ToStorage(layer.Base, residual).to(weight.dtype));
    }
}

/// <summary>Randomised SVD (Halko, Martinsson and Tropp, 2011), as torch.svd_lowrank with q = rank.</summary>
internal static class RandomizedSvd
{
    public static (Tensor U, Tensor S, Tensor V) LowRank(Tensor a, int q, int niter)
    {
        using var scope = NewDisposeScope();
        var r = randn(a.shape[1], q, dtype: a.dtype, device: a.device);
        var basis = linalg.qr(a.matmul(r)).Q;
        for (int i = 0; i < niter; i++)
        {
            basis = linalg.qr(a.t().matmul(basis)).Q;
            basis = linalg.qr(a.matmul(basis)).Q;
        }
        var b = basis.t().matmul(a);
        var (u, s, vh) = linalg.svd(b, fullMatrices: false);
        return (basis.matmul(u).MoveToOuterDisposeScope(), s.MoveToOuterDisposeScope(), vh.t().MoveToOuterDisposeScope());
    }
}
