namespace PeftSharp.Tuners.LoKr;

/// <summary>How LoKr splits a Linear's [out, in] into the Kronecker factors W1 [a, c] ⊗ W2 [b, d], as PEFT (after LyCORIS) does.</summary>
public sealed record LoKrShapes(int OutA, int OutB, int InC, int InD, bool FullW1, bool FullW2)
{
    public static LoKrShapes For(long inFeatures, long outFeatures, int r, bool decomposeBoth, int decomposeFactor)
    {
        var (inC, inD) = Factorize((int)inFeatures, decomposeFactor);
        var (outA, outB) = Factorize((int)outFeatures, decomposeFactor);
        // PEFT: a factor is kept whole unless r < max(its dims) / 2; W1 is only ever split with decompose_both.
        bool fullW1 = !(decomposeBoth && 2 * r < Math.Max(outA, inC));
        bool fullW2 = !(2 * r < Math.Max(outB, inD));
        return new LoKrShapes(outA, outB, inC, inD, fullW1, fullW2);
    }

    /// <summary>
    /// dimension = m n with m ≤ n. A positive <paramref name="factor"/> that divides is used as m; otherwise m walks
    /// up the divisors while m &lt; n and m ≤ factor (-1: no bound, so m ends near the square root). LyCORIS's loop
    /// also compares m + n with a length it never updates; that test never fires and is left out.
    /// </summary>
    public static (int M, int N) Factorize(int dimension, int factor = -1)
    {
        if (factor > 0 && dimension % factor == 0) return (factor, dimension / factor);
        if (factor == -1) factor = dimension;
        int m = 1, n = dimension;
        while (m < n)
        {
            int next = m + 1;
            while (dimension % next != 0) next++;
            if (next > factor) break;
            (m, n) = (next, dimension / next);
        }
        return m > n ? (n, m) : (m, n);
    }
}
