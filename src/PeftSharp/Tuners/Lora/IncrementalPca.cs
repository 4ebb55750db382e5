using static TorchSharp.torch;

namespace PeftSharp.Tuners.Lora;

/// <summary>
/// Incremental PCA (Ross et al., 2008), as scikit-learn's and PEFT's <c>IncrementalPCA.partial_fit</c>: each batch is
/// centred on its own mean and stacked under the components kept so far (scaled by their singular values) and a
/// mean-correction row; the SVD of that stack gives the new components. An exact SVD in float64 (PEFT uses a randomised
/// one in float32); signs follow scikit-learn's <c>svd_flip</c> on V, so that components can be compared between steps.
/// </summary>
internal sealed class IncrementalPca(int components) : IDisposable
{
    public int Components { get; } = components;
    /// <summary>[k, d]: the principal axes, largest variance first.</summary>
    public Tensor? Axes { get; private set; }
    public Tensor? SingularValues { get; private set; }
    /// <summary>Variance along each axis over the total variance of all features.</summary>
    public Tensor? ExplainedVarianceRatio { get; private set; }
    Tensor? mean, variance;
    long seen;

    /// <param name="x">[n, d] rows of one batch; n must be at least <see cref="Components"/>.</param>
    public void PartialFit(Tensor x)
    {
        using var scope = NewDisposeScope();
        x = x.to(ScalarType.Float64);
        long n = x.shape[0];
        var (colMean, colVar, total) = MeanAndVariance(x);
        Tensor stacked;
        if (seen == 0) stacked = x - colMean;
        else
        {
            var batchMean = x.mean([0]);
            var correction = Math.Sqrt((double)seen / total * n) * (mean! - batchMean);
            stacked = cat([SingularValues!.view(-1, 1) * Axes!, x - batchMean, correction.view(1, -1)], 0);
        }
        var (_, s, vh) = linalg.svd(stacked, fullMatrices: false);
        // svd_flip(u_based_decision=False): the largest entry of each axis is positive.
        var signs = vh.gather(1, vh.abs().argmax(1, keepdim: true)).sign();
        vh = vh * signs;
        var ratio = s.square() / (colVar * total).sum();
        int k = (int)Math.Min(Components, s.shape[0]);
        Replace(vh[..k].contiguous(), s[..k].contiguous(), ratio[..k].contiguous(), colMean, colVar);
        seen = total;
    }

    void Replace(Tensor axes, Tensor singular, Tensor ratio, Tensor newMean, Tensor newVariance)
    {
        Dispose();
        Axes = axes.DetachFromDisposeScope();
        SingularValues = singular.DetachFromDisposeScope();
        ExplainedVarianceRatio = ratio.DetachFromDisposeScope();
        mean = newMean.DetachFromDisposeScope();
        variance = newVariance.DetachFromDisposeScope();
    }

    // scikit-learn's _incremental_mean_and_var: running mean and (biased) variance per feature.
    (Tensor Mean, Tensor Variance, long Total) MeanAndVariance(Tensor x)
    {
        long n = x.shape[0], total = seen + n;
        var newSum = x.sum([0]);
        var batchMean = newSum / n;
        var centred = x - batchMean;
        var newUnnormalised = centred.square().sum([0]) - centred.sum([0]).square() / n;
        if (seen == 0) return (batchMean, newUnnormalised / total, total);
        var lastSum = mean! * seen;
        double lastOverNew = (double)seen / n;
        var unnormalised = variance! * seen + newUnnormalised + lastOverNew / total * (lastSum / lastOverNew - newSum).square();
        return ((lastSum + newSum) / total, unnormalised / total, total);
    }

    public void Dispose()
    {
        Axes?.Dispose(); SingularValues?.Dispose(); ExplainedVarianceRatio?.Dispose(); mean?.Dispose(); variance?.Dispose();
    }
}
