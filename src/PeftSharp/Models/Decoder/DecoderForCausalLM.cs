using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace PeftSharp.Models.Decoder;

/// <summary>
/// A <see cref="DecoderStack"/> with a linear LM head (tied to the embeddings where the config says so) and, for Gemma 2,
/// final logit soft-capping c * tanh(logits / c). State-dict names are the Hugging Face ones, so checkpoints load 1:1.
/// Each family builds one with its own layers (<c>LlamaForCausalLM.Create</c>, <c>GemmaForCausalLM.Create</c>, ...).
/// </summary>
public sealed class DecoderForCausalLM : PretrainedModel
{
    internal DecoderStack model;
    Module<Tensor, Tensor> lm_head;

    public DecoderForCausalLM(string name, ModelConfig c, ScalarType dtype, DecoderStack stack) : base(name, c, dtype)
    {
        model = stack;
        var head = nn.Linear(c.HiddenSize, c.VocabSize, hasBias: false, dtype: dtype);
        if (c.TieWordEmbeddings) head.weight = ((Embedding)model.embed_tokens).weight!;
        lm_head = head;
        RegisterComponents();
    }

    public DecoderStack Model => model;

    public override bool GradientCheckpointing { get => model.GradientCheckpointing; set => model.GradientCheckpointing = value; }

    public override IReadOnlyCollection<string> TiedWeights => Config.TieWordEmbeddings ? ["lm_head.weight"] : [];

    public override Tensor Embed(Tensor inputIds) => model.Embed(inputIds);

    /// <summary>LongRoPE: the step that first goes past the original length re-runs the sequence with the long factors.</summary>
    public override bool CacheExpires(long cached, long total) =>
        cached > 0 && !model.Rope.UsesLongFactors(cached - 1) && model.Rope.UsesLongFactors(total - 1);

    public override Tensor Forward(ModelInputs inputs)
    {
        using var scope = NewDisposeScope();
        var logits = lm_head.call(model.Forward(inputs));
        if (Config.FinalLogitSoftcapping is { } c) logits = tanh(logits / c) * c;
        return logits.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The head is fused with the loss only while it is a plain Linear (LoRA or modules_to_save wrap it) and nothing
    /// follows it (soft-capping does).
    /// </summary>
    public override (Tensor Hidden, Linear Head)? HiddenAndHead(ModelInputs inputs) =>
        lm_head is Linear head && Config.FinalLogitSoftcapping is null ? (model.Forward(inputs), head) : null;
}
