using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Models;

/// <summary>Additive attention masks: 0 where a query may attend a key, the dtype's lowest value elsewhere.</summary>
internal static class AttentionMasks
{
    /// <summary>
    /// Mask [B,1,T,S] for T new queries after <paramref name="past"/> cached positions (S = past + T).
    /// Null when plain causal attention suffices (no padding, no packing, no window, no cache).
    /// </summary>
    public static Tensor? Build(ModelInputs inputs, long past, bool causal, ScalarType dtype, Device device, int? slidingWindow = null)
    {
        long b = inputs.Batch, t = inputs.Length, s = past + t;
        bool padded = inputs.AttentionMask is not null && HasZeros(inputs.AttentionMask);
        if (!padded && inputs.SegmentIds is null && slidingWindow is null && past == 0 && causal) return null;
        if (!padded && inputs.SegmentIds is null && !causal) return null;

        using var scope = NewDisposeScope();
        var allowed = ones(b, 1, t, s, dtype: ScalarType.Bool, device: device);
        if (causal)
        {
            var q = arange(past, s, device: device).view(-1, 1);
            var k = arange(0, s, device: device).view(1, -1);
            var m = k <= q;
            if (slidingWindow is { } w) m = m & (k > q - w);
            allowed = allowed & m.view(1, 1, t, s);
        }
        if (padded)
            allowed = allowed & inputs.AttentionMask!.to(ScalarType.Bool).view(b, 1, 1, s);
        if (inputs.SegmentIds is { } seg)
        {
            if (past != 0) throw new NotSupportedException("packed sequences (segment ids) cannot be combined with a KV cache");
            var same = seg.view(b, 1, t, 1) == seg.view(b, 1, 1, t);
            allowed = allowed & same & (seg != 0).view(b, 1, 1, t);
        }
        var min = dtype == ScalarType.BFloat16 ? -3.3895e38 : dtype == ScalarType.Float16 ? -65504.0 : float.MinValue;
        var mask = zeros(b, 1, t, s, dtype: dtype, device: device).masked_fill(allowed.logical_not(), min);
        return mask.MoveToOuterDisposeScope();
    }

    static bool HasZeros(Tensor m)
    {
        using var z = m.eq(0).any();
        return z.item<bool>();
    }
}
