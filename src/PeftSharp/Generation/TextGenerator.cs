using PeftSharp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Generation;

/// <summary>
/// Autoregressive decoding with a KV cache: the prompt is run once, then each new token costs one
/// forward over one position. Prompts of different lengths are batched with left padding.
/// </summary>
public static class TextGenerator
{
    /// <summary>Returns each prompt followed by its generated tokens (without padding).</summary>
    public static List<int[]> Generate(ILanguageModel model, IReadOnlyList<int[]> prompts, GenerationOptions options)
    {
        options.Validate();
        if (prompts.Count == 0) return [];
        if (prompts.Any(p => p.Length == 0)) throw new ArgumentException("every prompt needs at least one token (e.g. the bos token)");
        if (prompts.SelectMany(p => p).FirstOrDefault(id => id < 0) is var negative and < 0)
            throw new ArgumentException($"prompt token id {negative} is negative: token ids index the vocabulary from 0");
        int pad = options.PadTokenId ?? (options.EosTokenIds.Count > 0 ? options.EosTokenIds[0] : 0);
        var device = model.Device;
        var gen = options.Seed is { } seed ? new torch.Generator((ulong)seed, device) : null;
        int b = prompts.Count, longest = prompts.Max(p => p.Length);

        using var outer = NewDisposeScope();
        var ids = full(b, longest, pad, ScalarType.Int64);
        var mask = zeros(b, longest, ScalarType.Int64);
        for (int i = 0; i < b; i++)
        {
            int off = longest - prompts[i].Length;
            ids[i, TensorIndex.Slice(off)] = tensor(prompts[i].Select(x => (long)x).ToArray());
            mask[i, TensorIndex.Slice(off)] = 1;
        }
        ids = ids.to(device);
        mask = mask.to(device);
        var produced = new List<long>[b];
        for (int i = 0; i < b; i++) produced[i] = [];
        var finished = new bool[b];
        var eos = options.EosTokenIds.ToHashSet();

        var cache = model.NewCache();
        using var noGrad = no_grad();
        Tensor next = ids;
        try
        {
            for (int step = 0; step < options.MaxNewTokens; step++)
            {
                using var scope = NewDisposeScope();
                // The whole sequence is run again when the model says its cache no longer fits (LongRoPE's switch).
                if (model.CacheExpires(cache.Length, cache.Length + next.shape[1]))
                {
                    cache.Dispose();
                    cache = model.NewCache();
                    next = ids;
                }
                // Positions count only real tokens, so left padding does not shift them (as transformers does).
                var positions = (mask.cumsum(1) - 1).clamp_min(0)[.., TensorIndex.Slice(mask.shape[1] - next.shape[1])];
                var logits = model.Forward(new ModelInputs { InputIds = next, AttentionMask = mask, PositionIds = positions, Cache = cache });
                var scores = logits[.., -1, ..].to(ScalarType.Float32);
                var token = Choose(scores, ids, options, gen);
                var tokenList = token.cpu().data<long>().ToArray();
                for (int i = 0; i < b; i++)
                {
                    if (finished[i]) { tokenList[i] = pad; continue; }
                    produced[i].Add(tokenList[i]);
                    if (eos.Contains((int)tokenList[i])) finished[i] = true;
                }
                var chosen = tensor(tokenList, device: device).view(b, 1);
                ids = cat([ids, chosen], 1).MoveToOuterDisposeScope();
                mask = cat([mask, ones(b, 1, ScalarType.Int64, device: device)], 1).MoveToOuterDisposeScope();
                next = chosen.MoveToOuterDisposeScope();
                if (finished.All(f => f)) break;
            }
        }
        finally { cache.Dispose(); }
        return prompts.Select((p, i) => p.Concat(produced[i].Select(x => (int)x)).ToArray()).ToList();
    }

    static Tensor Choose(Tensor scores, Tensor sequences, GenerationOptions o, torch.Generator? gen)
    {
        if (o.RepetitionPenalty != 1.0) scores = LogitsProcessors.RepetitionPenalty(scores, sequences, o.RepetitionPenalty);
        if (!o.DoSample) return scores.argmax(-1);
        if (o.Temperature != 1.0) scores = scores / o.Temperature;
        if (o.TopK > 0) scores = LogitsProcessors.TopK(scores, o.TopK);
        if (o.TopP < 1.0) scores = LogitsProcessors.TopP(scores, o.TopP);
        return multinomial(scores.softmax(-1), 1, generator: gen).squeeze(1);
    }
}
