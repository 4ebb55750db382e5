using TorchSharp;
using TorchSharp.Modules;
using PeftSharp.Models.Layers;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace PeftSharp.Models.Decoder;

/// <summary>Where a family multiplies token embeddings by sqrt(hidden_size).</summary>
public enum EmbeddingScale
{
    None,
    /// <summary>Gemma 2: every input embedding, passed-in ones (prompt tuning) included.</summary>
    AllInputs,
    /// <summary>Gemma 3: inside the embedding layer, so only embeddings looked up from ids.</summary>
    Lookup,
}

/// <summary>
/// A decoder-only stack: embeddings, N blocks, final norm (transformers' <c>XxxModel</c>: Llama, Mistral, Qwen2/3,
/// Gemma 2/3, Phi-3). Global and sliding-window layers each get their own mask and, where the family says so,
/// their own RoPE (Gemma 3's local base frequency).
/// </summary>
public sealed class DecoderStack : nn.Module
{
    readonly ModelConfig config;
    readonly Rope rope;
    readonly Rope? localRope;
    readonly EmbeddingScale embeddingScale;
    internal Module<Tensor, Tensor> embed_tokens;
    internal ModuleList<nn.Module> layers;
    Module<Tensor, Tensor> norm; // a plain module so that LN tuning can wrap it

    public DecoderStack(ModelConfig c, ScalarType dtype, Func<int, nn.Module> layer, Func<Module<Tensor, Tensor>> newNorm,
        EmbeddingScale embeddingScale = EmbeddingScale.None) : base("DecoderStack")
    {
        config = c;
        this.embeddingScale = embeddingScale;
        rope = new Rope(c.HeadDim, c.RopeTheta, c.RopeScaling, c.RopeScaling?.OriginalMaxPositionEmbeddings ?? c.MaxPositions, c.PartialRotaryFactor);
        if (c.LocalRopeTheta is { } local)
            localRope = new Rope(c.HeadDim, local, c.LocalRopeScaling, c.LocalRopeScaling?.OriginalMaxPositionEmbeddings ?? c.MaxPositions, c.PartialRotaryFactor);
        embed_tokens = nn.Embedding(c.VocabSize, c.HiddenSize, dtype: dtype);
        layers = new ModuleList<nn.Module>(Enumerable.Range(0, c.NumLayers).Select(layer).ToArray());
        norm = newNorm();
        RegisterComponents();
    }

    /// <summary>Recompute each layer's activations in backward instead of keeping them (training only).</summary>
    public bool GradientCheckpointing { get; set; }

    internal Rope Rope => rope;

    /// <summary>
    /// When set, runs each block in place of the stack: given the block's index, its input [B, T, H], the cache the
    /// stack was given and a function that runs the block on an input with a cache, returns the block's output.
    /// For analyses and steering that take a block apart (TuCo); null in normal use.
    /// </summary>
    public Func<int, Tensor, KvCache?, Func<Tensor, KvCache?, Tensor>, Tensor>? LayerHook { get; set; }

    /// <summary>Input embeddings of ids, as the family's embedding layer returns them.</summary>
    public Tensor Embed(Tensor ids)
    {
        using var scope = NewDisposeScope();
        var h = embed_tokens.call(ids);
        return (embeddingScale == EmbeddingScale.Lookup ? Scaled(h) : h).MoveToOuterDisposeScope();
    }

    // sqrt(hidden) as a scalar of the embedding dtype, as transformers casts it (bf16 rounds sqrt(3072) to 55.5).
    Tensor Scaled(Tensor h) => h * tensor(Math.Sqrt(config.HiddenSize), dtype: h.dtype, device: h.device);

    /// <summary>Final hidden states [B, T, H].</summary>
    public Tensor Forward(ModelInputs inputs)
    {
        using var scope = NewDisposeScope();
        var h = inputs.InputsEmbeds ?? Embed(inputs.InputIds!);
        if (embeddingScale == EmbeddingScale.AllInputs) h = Scaled(h);
        long b = h.shape[0], t = h.shape[1], past = inputs.Cache?.Length ?? 0;
        var pos = inputs.PositionIds ?? arange(past, past + t, device: h.device).unsqueeze(0).expand(b, t);
        var (cos, sin) = rope.CosSin(pos, h.dtype);
        var global = new LayerInputs(cos, sin, AttentionMasks.Build(inputs, past, causal: true, h.dtype, h.device));
        var sliding = global;
        if (Enumerable.Range(0, config.NumLayers).Any(config.IsSliding))
        {
            var (lc, ls) = localRope is null ? (cos, sin) : localRope.CosSin(pos, h.dtype);
            sliding = new LayerInputs(lc, ls, AttentionMasks.Build(inputs, past, causal: true, h.dtype, h.device, config.SlidingWindow));
        }
        bool checkpoint = GradientCheckpointing && ActivationCheckpoint.Applies(this, inputs);
        for (int i = 0; i < layers.Count; i++)
        {
            var layer = (IDecoderLayer)layers[i];
            var p = config.IsSliding(i) ? sliding : global;
            if (LayerHook is { } hook)
            {
                h = hook(i, h, inputs.Cache, (x, cache) => layer.Forward(x, p, cache));
                continue;
            }
            h = checkpoint
                ? ActivationCheckpoint.Run(xs => layer.Forward(xs[0]!, new LayerInputs(xs[1]!, xs[2]!, xs[3]), null), h, p.Cos, p.Sin, p.Mask)
                : layer.Forward(h, p, inputs.Cache);
        }
        return norm.call(h).MoveToOuterDisposeScope();
    }
}
