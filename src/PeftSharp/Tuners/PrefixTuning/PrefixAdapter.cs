using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tuners.PromptLearning;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.PrefixTuning;

/// <summary>
/// Prefix tuning at run time: the prefix is written into the KV cache ([B, kv_heads, n, head_dim] per layer) before
/// the real tokens, and the attention mask gains n leading ones. Logits cover the real tokens only ([B, T, V]).
/// A caller's empty cache (generation) is filled on the first step; without one, a cache lives for one forward,
/// keeping gradients when they are on so that the prefix trains.
/// </summary>
public sealed class PrefixAdapter(PrefixEncoder encoder, int numVirtualTokens, int layers, int kvHeads, int headDim) : IPromptAdapter
{
    public const string Key = "prompt_embeddings";

    public int NumVirtualTokens => numVirtualTokens;

    public Tensor Forward(PretrainedModel model, ModelInputs inputs)
    {
        using var scope = NewDisposeScope();
        var shifted = VirtualTokens.AfterCachedVirtualTokens(inputs, numVirtualTokens);
        if (inputs.Cache is { } cache)
        {
            if (cache.Length == 0) Fill(cache, model, inputs.Batch);
            return model.Forward(shifted).MoveToOuterDisposeScope();
        }
        using var own = new KvCache(model.Config.NumLayers, trackGradients: is_grad_enabled());
        Fill(own, model, inputs.Batch);
        return model.Forward(shifted with { Cache = own }).MoveToOuterDisposeScope();
    }

    /// <summary>Writes layer i's prefix keys (slot 2i) and values (slot 2i+1) into <paramref name="cache"/>, as PEFT's get_prompt lays them out.</summary>
    public void Fill(KvCache cache, PretrainedModel model, long batch)
    {
        using var scope = NewDisposeScope();
        var kv = encoder.Encode().to(model.DType)                            // (n, 2L * kvh * hd)
            .view(numVirtualTokens, layers * 2, kvHeads, headDim)
            .permute(1, 2, 0, 3);                                            // (2L, kvh, n, hd)
        for (int i = 0; i < layers; i++)
            cache.Set(i, kv[2 * i].unsqueeze(0).expand(batch, -1, -1, -1), kv[2 * i + 1].unsqueeze(0).expand(batch, -1, -1, -1));
    }

    /// <summary>An empty cache: <see cref="Forward"/> fills it on the first step, for whatever batch size it sees.</summary>
    public KvCache NewCache(PretrainedModel model, long batch) => model.NewCache();

    public IEnumerable<(string Key, Tensor Value)> StateDict()
    {
        using var _ = no_grad();
        yield return (Key, encoder.Encode().detach());
    }

    public void LoadStateDict(IReadOnlyDictionary<string, Tensor> tensors, string source)
    {
        if (!tensors.TryGetValue(Key, out var t))
            throw new InvalidDataException($"{source}: no tensor '{Key}'; tensors there: {string.Join(", ", tensors.Keys.Take(10))}");
        encoder.LoadTable(t, source);
    }

    public IEnumerable<Parameter> TrainableParameters() => encoder.parameters();
}
