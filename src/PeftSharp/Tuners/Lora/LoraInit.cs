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
        if (init is not ("true" or "gaussian"))
            throw new ArgumentException($"init_lora_weights '{init}' is not supported; use true, false, gaussian, pissa, pissa_niter_N or olora");
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
