using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Models.Layers;

/// <summary>
/// Rotary position embeddings (Su et al., 2021, https://arxiv.org/abs/2104.09864) with transformers' frequency
/// scalings: linear (positions / factor), dynamic NTK (base grows past the trained length) and llama3 (per-band).
/// </summary>
public sealed class Rope
{
    readonly int headDim;
    readonly double theta;
    readonly RopeScaling? scaling;
    readonly int maxPositions;
    readonly Tensor invFreq; // [headDim/2], float32

    public Rope(int headDim, double theta, RopeScaling? scaling, int maxPositions)
    {
        this.headDim = headDim;
        this.theta = theta;
        this.scaling = scaling;
        this.maxPositions = maxPositions;
        invFreq = InverseFrequencies(theta).DetachFromDisposeScope();
    }

    Tensor InverseFrequencies(double baseTheta)
    {
        var exps = arange(0, headDim, 2, dtype: ScalarType.Int64).to(ScalarType.Float32) / headDim;
        var inv = 1.0f / pow(tensor(baseTheta, ScalarType.Float32), exps);
        if (scaling is { Type: "linear" } s) inv = inv / s.Factor;
        if (scaling is { Type: "llama3" } l) inv = Llama3(inv, l);
        return inv;
    }

    static Tensor Llama3(Tensor inv, RopeScaling s)
    {
        double oldLen = s.OriginalMaxPositionEmbeddings ?? 8192;
        double lowWavelen = oldLen / s.LowFreqFactor, highWavelen = oldLen / s.HighFreqFactor;
        var wavelen = 2 * Math.PI / inv;
        var scaled = where(wavelen > lowWavelen, inv / s.Factor, inv);
        var smooth = (oldLen / wavelen - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor);
        var smoothed = (1 - smooth) * scaled / s.Factor + smooth * scaled;
        var medium = (wavelen >= highWavelen).logical_and(wavelen <= lowWavelen);
        return where(medium, smoothed, scaled);
    }

    /// <summary>cos and sin, each [B, T, headDim], for the given positions [B, T], in <paramref name="dtype"/>.</summary>
    public (Tensor Cos, Tensor Sin) CosSin(Tensor positionIds, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var inv = invFreq.to(positionIds.device);
        if (scaling is { Type: "dynamic" } d)
        {
            long seqLen = positionIds.max().item<long>() + 1;
            if (seqLen > maxPositions)
            {
                double b = theta * Math.Pow(d.Factor * seqLen / maxPositions - (d.Factor - 1), headDim / (headDim - 2.0));
                inv = InverseFrequencies(b).to(positionIds.device);
            }
        }
        var freqs = positionIds.to(ScalarType.Float32).unsqueeze(-1) * inv.view(1, 1, -1); // [B,T,D/2]
        var emb = cat([freqs, freqs], -1);
        return (emb.cos().to(dtype).MoveToOuterDisposeScope(), emb.sin().to(dtype).MoveToOuterDisposeScope());
    }

    /// <summary>Rotates q or k ([B, heads, T, D]) by the angles of cos/sin ([B, T, D]).</summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        using var scope = NewDisposeScope();
        var c = cos.unsqueeze(1);
        var s = sin.unsqueeze(1);
        var half = x.shape[^1] / 2;
        var rotated = cat([-x[.., .., .., TensorIndex.Slice(half)], x[.., .., .., TensorIndex.Slice(0, half)]], -1);
        return (x * c + rotated * s).MoveToOuterDisposeScope();
    }
}
