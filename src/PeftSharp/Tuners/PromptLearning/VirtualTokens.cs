using PeftSharp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.PromptLearning;

/// <summary>
/// How n virtual tokens change a forward pass's inputs (PEFT's PeftModelForCausalLM.forward and
/// prepare_inputs_for_generation). The attention mask gains n leading ones. Position ids given by the caller
/// count real tokens only (as <see cref="Generation.TextGenerator"/> computes them), so they move n places on;
/// PEFT drops them instead and lets the model count from the cache, which gives the same numbers without padding.
/// </summary>
public static class VirtualTokens
{
    /// <summary>Inputs with <paramref name="prompts"/> [n, H] prepended to the token embeddings (prompt tuning, P-tuning).</summary>
    public static ModelInputs Prepend(PretrainedModel model, ModelInputs inputs, Tensor prompts)
    {
        if (inputs.SegmentIds is not null) throw new NotSupportedException("packed sequences (segment ids) cannot be combined with virtual tokens");
        long b = inputs.Batch, n = prompts.shape[0];
        var embeds = inputs.InputsEmbeds ?? model.Embed(inputs.InputIds!);
        var virtualEmbeds = prompts.to(embeds.dtype).unsqueeze(0).expand(b, n, -1);  // (B, n, H)
        return inputs with
        {
            InputIds = null,
            InputsEmbeds = cat([virtualEmbeds, embeds], 1),                            // (B, n+T, H)
            AttentionMask = ExtendMask(inputs.AttentionMask, n),
            PositionIds = inputs.PositionIds is { } p
                ? cat([arange(n, device: p.device).unsqueeze(0).expand(b, n), p + n], 1) : null,
            TokenTypeIds = inputs.TokenTypeIds is { } t ? cat([zeros(b, n, t.dtype, t.device), t], 1) : null,
        };
    }

    /// <summary>Inputs for a step whose n virtual positions are already in the KV cache (prefix tuning, later decode steps).</summary>
    public static ModelInputs AfterCachedVirtualTokens(ModelInputs inputs, long n)
    {
        if (inputs.SegmentIds is not null) throw new NotSupportedException("packed sequences (segment ids) cannot be combined with virtual tokens");
        return inputs with
        {
            AttentionMask = ExtendMask(inputs.AttentionMask, n),
            PositionIds = inputs.PositionIds is { } p ? p + n : null,
        };
    }

    /// <summary>Labels for logits that include n virtual positions: -100 (ignored) there, as PEFT pads them.</summary>
    public static Tensor PadLabels(Tensor labels, long n) =>
        cat([full(labels.shape[0], n, Losses.IgnoreIndex, labels.dtype, labels.device), labels], 1);

    static Tensor? ExtendMask(Tensor? mask, long n) =>
        mask is null ? null : cat([ones(mask.shape[0], n, mask.dtype, mask.device), mask], 1);
}
