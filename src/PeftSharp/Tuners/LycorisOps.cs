using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Tuners;

/// <summary>The training-time regularisers LyCORIS-style methods (LoHa, LoKr) share, as PEFT applies them.</summary>
internal static class LycorisOps
{
    /// <summary>module_dropout: in training, the whole adapter is skipped for this forward with probability p.</summary>
    public static bool SkipModule(double p, bool training)
    {
        if (!training || p <= 0) return false;
        using var r = rand(1);
        return r.item<float>() <= p;
    }

    /// <summary>
    /// rank_dropout: in training, whole output rows of the delta weight are dropped with probability p; with
    /// <paramref name="rescale"/> the survivors are divided by their fraction (the mean of the mask).
    /// </summary>
    public static Tensor RankDropout(Tensor deltaOutIn, double p, bool rescale)
    {
        using var scope = NewDisposeScope();
        var keep = (rand(deltaOutIn.shape[0], device: deltaOutIn.device) > p).to(deltaOutIn.dtype);
        if (rescale) keep = keep / keep.mean();
        return (deltaOutIn * keep.view(-1, 1)).MoveToOuterDisposeScope();
    }
}
