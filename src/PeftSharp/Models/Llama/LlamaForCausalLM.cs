using TorchSharp;
using TorchSharp.Modules;
using PeftSharp.Models.Layers;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace PeftSharp.Models.Llama;

/// <summary>The decoder stack: embeddings, N decoder layers, final RMSNorm. Mistral and Qwen2 share it.</summary>
public sealed class LlamaModel : nn.Module
{
    readonly ModelConfig config;
    readonly Rope rope;
    internal Module<Tensor, Tensor> embed_tokens;
    internal ModuleList<LlamaDecoderLayer> layers;
    Module<Tensor, Tensor> norm; // a plain module so that LN tuning can wrap it

    public LlamaModel(ModelConfig c, ScalarType dtype) : base("LlamaModel")
    {
        config = c;
        rope = new Rope(c.HeadDim, c.RopeTheta, c.RopeScaling, c.RopeScaling?.OriginalMaxPositionEmbeddings ?? c.MaxPositions);
        embed_tokens = nn.Embedding(c.VocabSize, c.HiddenSize, dtype: dtype);
        layers = new ModuleList<LlamaDecoderLayer>(Enumerable.Range(0, c.NumLayers).Select(i => new LlamaDecoderLayer(c, i, dtype)).ToArray());
        norm = new RmsNorm(c.HiddenSize, c.NormEps, dtype);
        RegisterComponents();
    }

    /// <summary>Recompute each layer's activations in backward instead of keeping them (training only).</summary>
    public bool GradientCheckpointing { get; set; }

    /// <summary>Final hidden states [B, T, H].</summary>
    public Tensor Forward(ModelInputs inputs)
    {
        using var scope = NewDisposeScope();
        var h = inputs.InputsEmbeds ?? embed_tokens.call(inputs.InputIds!);
        long b = h.shape[0], t = h.shape[1], past = inputs.Cache?.Length ?? 0;
        var pos = inputs.PositionIds ?? arange(past, past + t, device: h.device).unsqueeze(0).expand(b, t);
        var (cos, sin) = rope.CosSin(pos, h.dtype);
        var mask = AttentionMasks.Build(inputs, past, causal: true, h.dtype, h.device, config.SlidingWindow);
        bool checkpoint = GradientCheckpointing && ActivationCheckpoint.Applies(this, inputs);
        foreach (var layer in layers)
        {
            h = checkpoint
                ? ActivationCheckpoint.Run(xs => layer.Forward(xs[0]!, xs[1]!, xs[2]!, xs[3], null), h, cos, sin, mask)
                : layer.Forward(h, cos, sin, mask, inputs.Cache);
        }
        return norm.call(h).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// Llama (Touvron et al., 2023), Mistral (Jiang et al., 2023) and Qwen2 (Yang et al., 2024) causal LMs:
/// the same block with different defaults (Qwen2: q/k/v bias; Mistral: sliding-window attention).
/// State-dict names are the Hugging Face ones, so checkpoints load 1:1.
/// </summary>
public sealed class LlamaForCausalLM : PretrainedModel
{
    internal LlamaModel model;
    Module<Tensor, Tensor> lm_head;

    public LlamaForCausalLM(ModelConfig c, ScalarType dtype = ScalarType.Float32) : base("LlamaForCausalLM", c, dtype)
    {
        model = new LlamaModel(c, dtype);
        var head = nn.Linear(c.HiddenSize, c.VocabSize, hasBias: false, dtype: dtype);
        if (c.TieWordEmbeddings) head.weight = ((Embedding)model.embed_tokens).weight!;
        lm_head = head;
        RegisterComponents();
    }

    public LlamaModel Model => model;

    public override bool GradientCheckpointing { get => model.GradientCheckpointing; set => model.GradientCheckpointing = value; }

    public override IReadOnlyCollection<string> TiedWeights => Config.TieWordEmbeddings ? ["lm_head.weight"] : [];

    public override Tensor Embed(Tensor inputIds) => model.embed_tokens.call(inputIds);

    public override Tensor Forward(ModelInputs inputs)
    {
        using var scope = NewDisposeScope();
        return lm_head.call(model.Forward(inputs)).MoveToOuterDisposeScope();
    }

    /// <summary>The head is fused with the loss only while it is a plain Linear (LoRA or modules_to_save wrap it).</summary>
    public override (Tensor Hidden, Linear Head)? HiddenAndHead(ModelInputs inputs) =>
        lm_head is Linear head ? (model.Forward(inputs), head) : null;
}
