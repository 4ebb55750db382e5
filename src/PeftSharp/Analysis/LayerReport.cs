namespace PeftSharp.Analysis;

/// <summary>
/// One weight matrix compared with its base: <paramref name="Module"/> is the module name (the tensor name without
/// <c>.weight</c>), <paramref name="DeltaSpectrum"/> the singular values of dW and <paramref name="DeltaEffectiveRank"/>
/// their entropy-based effective rank (<see cref="Spectra.EffectiveRank"/>).
/// </summary>
public sealed record LayerReport(string Module, long Rows, long Cols, IntruderScan Scan, float[] DeltaSpectrum, double DeltaEffectiveRank)
{
    public int IntruderCount => Scan.Intruders.Length;
}

/// <summary>Settings of an intruder scan: PEFT's <c>top_k</c> and <c>threshold_epsilon</c> and their defaults.</summary>
public sealed record IntruderOptions(int TopK = 10, double Epsilon = 0.5)
{
    public void Validate()
    {
        if (TopK < 1) throw new ArgumentException($"--top-k {TopK}: must be at least 1");
        if (!(Epsilon > 0 && Epsilon <= 1)) throw new ArgumentException($"--epsilon {Epsilon}: a cosine threshold must be in (0, 1]");
    }
}
