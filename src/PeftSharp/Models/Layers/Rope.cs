using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Models.Layers;

/// <summary>
/// Rotary position embeddings (Su et al., 2021, https://arxiv.org/abs/2104.09864) with transformers' frequency
/// scalings: linear (positions / factor), dynamic NTK (base grows past the trained length), llama3 (per-band) and
/// LongRoPE (Ding et al., 2024, https://arxiv.org/abs/2402.13753: per-frequency factors, short or long by length,
/// and cos/sin scaled by an attention factor). With a partial rotary factor only the first
/// <c>rotaryDim</c> channels of each head turn (Phi-3/4); the rest pass through.
/// </summary>
public sealed class Rope
{
    readonly int rotaryDim;
    readonly double theta;
    readonly RopeScaling? scaling;
    readonly int maxPositions;
    readonly Tensor invFreq;      // [rotaryDim/2], float32
    readonly Tensor? longInvFreq; // LongRoPE's frequencies for sequences past the original length

    /// <param name="maxPositions">the length past which dynamic NTK scaling grows the base.</param>
    public Rope(int headDim, double theta, RopeScaling? scaling, int maxPositions, double partialRotaryFactor = 1.0)
    {
        rotaryDim = (int)(headDim * partialRotaryFactor);
        this.theta = theta;
        this.scaling = scaling;
        this.maxPositions = maxPositions;
        invFreq = InverseFrequencies(theta, scaling?.ShortFactor).DetachFromDisposeScope();
        if (scaling is { Type: "longrope" } l) longInvFreq = InverseFrequencies(theta, l.LongFactor).DetachFromDisposeScope();
    }

    public int RotaryDim => rotaryDim;

    Tensor InverseFrequencies(double baseTheta, double[]? extFactors)
    {
        using var scope = NewDisposeScope();
        var exps = arange(0, rotaryDim, 2, dtype: ScalarType.Int64).to(ScalarType.Float32) / rotaryDim;
        var powers = pow(tensor(baseTheta, ScalarType.Float32), exps);
        if (extFactors is not null)
        {
            if (extFactors.Length != rotaryDim / 2)
                throw new InvalidDataException($"rope_scaling: short_factor/long_factor have {extFactors.Length} entries; this model needs {rotaryDim / 2} (rotary dim / 2)");
            powers = tensor(extFactors.Select(x => (float)x).ToArray()) * powers;
        }
        var inv = 1.0f / powers;
        if (scaling is { Type: "linear" } s) inv = inv / s.Factor;
        if (scaling is { Type: "llama3" } l) inv = Llama3(inv, l);
        return inv.MoveToOuterDisposeScope();
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

    /// <summary>
    /// Whether LongRoPE uses its long factors for a sequence whose last position is <paramref name="lastPosition"/>:
    /// past the original training length, as transformers decides from max(position_ids) + 1.
    /// </summary>
    public bool UsesLongFactors(long lastPosition) =>
        scaling is { Type: "longrope", OriginalMaxPositionEmbeddings: { } orig } && lastPosition + 1 > orig;

    /// <summary>cos and sin, each [B, T, rotaryDim], for the given positions [B, T], in <paramref name="dtype"/>.</summary>
    public (Tensor Cos, Tensor Sin) CosSin(Tensor positionIds, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var inv = invFreq.to(positionIds.device);
        if (scaling is { Type: "dynamic" } d)
        {
            long seqLen = positionIds.max().item<long>() + 1;
            if (seqLen > maxPositions)
            {
                double b = theta * Math.Pow(d.Factor * seqLen / maxPositions - (d.Factor - 1), rotaryDim / (rotaryDim - 2.0));
                inv = InverseFrequencies(b, null).to(positionIds.device);
            }
        }
        if (longInvFreq is not null && UsesLongFactors(positionIds.max().item<long>())) inv = longInvFreq.to(positionIds.device);
        var freqs = positionIds.to(ScalarType.Float32).unsqueeze(-1) * inv.view(1, 1, -1); // [B,T,D/2]
        var emb = cat([freqs, freqs], -1);
        Tensor cos = emb.cos(), sin = emb.sin();
        if (scaling?.AttentionFactor is { } f && f != 1.0)
        {
            cos = cos * f;
            sin = sin * f;
        }
        return (cos.to(dtype).MoveToOuterDisposeScope(), sin.to(dtype).MoveToOuterDisposeScope());
    }

    /// <summary>
    /// Rotates q or k ([B, heads, T, D]) by the angles of cos/sin ([B, T, R]); with R &lt; D (partial rotary)
    /// only the first R channels turn.
    /// </summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        using var scope = NewDisposeScope();
        long r = cos.shape[^1], d = x.shape[^1];
        var rot = r == d ? x : x[.., .., .., TensorIndex.Slice(0, r)];
        var c = cos.unsqueeze(1);
        var s = sin.unsqueeze(1);
        var half = r / 2;
        var rotated = cat([-rot[.., .., .., TensorIndex.Slice(half)], rot[.., .., .., TensorIndex.Slice(0, half)]], -1);
        var y = rot * c + rotated * s;
        if (r != d) y = cat([y, x[.., .., .., TensorIndex.Slice(r)]], -1);
        return y.MoveToOuterDisposeScope();
    }
}
