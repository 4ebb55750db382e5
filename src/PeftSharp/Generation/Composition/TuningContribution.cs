using PeftSharp.Models;
using PeftSharp.Models.Decoder;
using PeftSharp.Peft;
using static TorchSharp.torch;

namespace PeftSharp.Generation.Composition;

/// <summary>One block's share of a prompt's last-token hidden-state change: L1 norms of its two components.</summary>
/// <param name="Share"><c>|FTC_l| / (|PTC_l| + |FTC_l|)</c>, 0 when both are 0.</param>
public sealed record TuCoLayer(int Layer, double Ptc, double Ftc, double Share);

/// <summary>The Tuning Contribution of one prompt, and its parts per block.</summary>
public sealed record TuCoReport(double TuCo, double Ptc, double Ftc, IReadOnlyList<TuCoLayer> Layers);

/// <summary>
/// TuCo (Nuti, Franzmeyer and Henriques, "TuCo: Measuring the Contribution of Fine-Tuning to Individual Responses of
/// LLMs", ICML 2025, https://arxiv.org/abs/2506.23423). Block l of the tuned model updates the residual stream by
/// <c>f_FT(x_l, l)</c>, split exactly into the pre-training component <c>PTC_l = f_PT(x_l, l)</c> (the base block on
/// the tuned model's stream) and the fine-tuning component <c>FTC_l = f_FT(x_l, l) - f_PT(x_l, l)</c>. Over the
/// prompt's last token, <c>TuCo = |sum_l FTC_l| / (|sum_l PTC_l| + |sum_l FTC_l|)</c> (the paper's Algorithm 1; the
/// norm here is L1). Here the tuned model is the base with its adapters on, the base the same with them off.
/// </summary>
public static class TuningContribution
{
    /// <summary>TuCo of one prompt <paramref name="ids"/> [1, T] (the last token is the one measured).</summary>
    public static TuCoReport Measure(PeftModel model, Tensor ids)
    {
        if (ids.dim() != 2 || ids.shape[0] != 1) throw new ArgumentException($"TuCo measures one prompt: ids must be [1, T], got [{string.Join(",", ids.shape)}]");
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var layers = new List<TuCoLayer>();
        // read out as doubles: the hook's tensors belong to the stack's dispose scope, gone once the forward returns
        double[]? totalPtc = null, totalFtc = null;
        using (Hook(model, (i, x, cache, run) =>
        {
            var (ptc, ftc) = Components(model, x, cache, cache, run);
            double[] p = LastToken(ptc), f = LastToken(ftc);
            totalPtc = totalPtc is null ? p : totalPtc.Zip(p, (a, b) => a + b).ToArray();
            totalFtc = totalFtc is null ? f : totalFtc.Zip(f, (a, b) => a + b).ToArray();
            double pn = L1(p), fn = L1(f);
            layers.Add(new TuCoLayer(i, pn, fn, pn + fn == 0 ? 0 : fn / (pn + fn)));
            return x + ptc + ftc;
        }))
            model.Forward(ModelInputs.Ids(ids.to(model.Device)));
        double ptcNorm = L1(totalPtc!), ftcNorm = L1(totalFtc!);
        return new TuCoReport(ptcNorm + ftcNorm == 0 ? 0 : ftcNorm / (ptcNorm + ftcNorm), ptcNorm, ftcNorm, layers);
    }

    static double[] LastToken(Tensor component)
    {
        using var last = component[0, -1].to(ScalarType.Float64).cpu();
        return last.data<double>().ToArray();
    }

    static double L1(double[] v) => v.Sum(Math.Abs);

    /// <summary>
    /// The two components of one block on input <paramref name="x"/>: the block with the adapters off, minus x, and the
    /// block with them on minus that. Each run keeps its own cache (the base's keys differ from the tuned ones).
    /// </summary>
    internal static (Tensor Ptc, Tensor Ftc) Components(PeftModel model, Tensor x, KvCache? tunedCache, KvCache? baseCache, Func<Tensor, KvCache?, Tensor> run)
    {
        Tensor ptc;
        using (model.DisableAdapters()) ptc = run(x, baseCache) - x;
        var ftc = run(x, tunedCache) - x - ptc;
        return (ptc, ftc);
    }

    /// <summary>Sets the decoder stack's layer hook for the life of the returned handle.</summary>
    internal static IDisposable Hook(PeftModel model, Func<int, Tensor, KvCache?, Func<Tensor, KvCache?, Tensor>, Tensor> hook)
    {
        var stack = StackOf(model);
        if (stack.LayerHook is not null) throw new InvalidOperationException("the model's decoder stack already has a layer hook");
        stack.LayerHook = hook;
        return new Unhook(stack);
    }

    static DecoderStack StackOf(PeftModel model) => model.Base is DecoderForCausalLM d ? d.Model
        : throw new NotSupportedException($"TuCo needs a decoder-only model (Llama, Mistral, Qwen, Gemma, Phi-3); {model.Base.Config.Architecture} is not one");

    sealed class Unhook(DecoderStack stack) : IDisposable
    {
        public void Dispose() => stack.LayerHook = null;
    }
}

/// <summary>
/// The tuned model with its fine-tuning component scaled by <paramref name="scale"/> in every block, as TuCo's paper
/// steers it: <c>x_{l+1} = x_l + PTC_l(x_l) + scale FTC_l(x_l)</c>. Scale 1 is the tuned model, 0 the base model (the
/// adapters of the blocks; an adapted embedding or head stays as it is), above 1 amplifies the fine-tuning.
/// Costs two runs of every block; the cache holds the tuned and the base keys of every block.
/// </summary>
public sealed class TuningScaled(PeftModel model, double scale) : ILanguageModel
{
    public Device Device => model.Device;

    public Tensor Forward(ModelInputs inputs)
    {
        // The stack sees this model's two-member cache for its length; each run of a block gets its own member.
        using var hook = TuningContribution.Hook(model, (_, x, cache, run) =>
        {
            var (ptc, ftc) = TuningContribution.Components(model, x, cache?.Members[0], cache?.Members[1], run);
            return x + ptc + ftc.mul_(scale);
        });
        return model.Forward(inputs);
    }

    public KvCache NewCache() => KvCache.Of([model.NewCache(), model.NewCache()]);

    public bool CacheExpires(long cached, long total) => model.CacheExpires(cached, total);
}
