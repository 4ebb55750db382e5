using TorchSharp;
using TorchSharp.Modules;
using PeftSharp.Models.Layers;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace PeftSharp.Models.Gpt2;

/// <summary>GPT-2 attention: one Conv1D makes q, k and v; scaled dot-product with a causal mask.</summary>
public sealed class Gpt2Attention : nn.Module
{
    readonly int heads, headDim, layerIndex;
    Module<Tensor, Tensor> c_attn, c_proj;

    public Gpt2Attention(ModelConfig c, int layerIndex, ScalarType dtype) : base("GPT2Attention")
    {
        heads = c.NumHeads;
        headDim = c.HeadDim;
        this.layerIndex = layerIndex;
        c_attn = new Conv1D(c.HiddenSize, 3 * c.HiddenSize, dtype);
        c_proj = new Conv1D(c.HiddenSize, c.HiddenSize, dtype);
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, Tensor? mask, KvCache? cache)
    {
        using var scope = NewDisposeScope();
        long b = x.shape[0], t = x.shape[1], h = x.shape[2];
        var qkv = c_attn.call(x).split(h, dim: 2);
        var q = qkv[0].view(b, t, heads, headDim).transpose(1, 2); // (B, nh, T, hd)
        var k = qkv[1].view(b, t, heads, headDim).transpose(1, 2);
        var v = qkv[2].view(b, t, heads, headDim).transpose(1, 2);
        if (cache is not null) (k, v) = cache.Append(layerIndex, k, v);
        var y = nn.functional.scaled_dot_product_attention(q, k, v, mask, 0.0, mask is null && t > 1);
        return c_proj.call(y.transpose(1, 2).reshape(b, t, h)).MoveToOuterDisposeScope();
    }
}

/// <summary>GPT-2 MLP: c_proj(gelu(c_fc(x))) with the tanh approximation of GELU ("gelu_new").</summary>
public sealed class Gpt2MLP : nn.Module<Tensor, Tensor>
{
    readonly string act;
    Module<Tensor, Tensor> c_fc, c_proj;

    public Gpt2MLP(ModelConfig c, ScalarType dtype) : base("GPT2MLP")
    {
        act = c.HiddenAct;
        if (act is not ("gelu_new" or "gelu" or "gelu_pytorch_tanh" or "relu"))
            throw new NotSupportedException($"activation_function '{act}' is not supported for gpt2");
        c_fc = new Conv1D(c.HiddenSize, c.IntermediateSize, dtype);
        c_proj = new Conv1D(c.IntermediateSize, c.HiddenSize, dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = c_fc.call(x);
        h = act switch
        {
            "gelu" => nn.functional.gelu(h),
            "relu" => nn.functional.relu(h),
            _ => Layers.Activations.GeluTanh(h),
        };
        return c_proj.call(h).MoveToOuterDisposeScope();
    }
}

public sealed class Gpt2Block : nn.Module
{
    // Typed as plain modules so that adapters (LN tuning, bottleneck adapters) can wrap them.
    Module<Tensor, Tensor> ln_1, ln_2;
    Gpt2Attention attn;
    Module<Tensor, Tensor> mlp;

    public Gpt2Block(ModelConfig c, int index, ScalarType dtype) : base("GPT2Block")
    {
        ln_1 = nn.LayerNorm(c.HiddenSize, c.NormEps, dtype: dtype);
        attn = new Gpt2Attention(c, index, dtype);
        ln_2 = nn.LayerNorm(c.HiddenSize, c.NormEps, dtype: dtype);
        mlp = new Gpt2MLP(c, dtype);
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, Tensor? mask, KvCache? cache)
    {
        using var scope = NewDisposeScope();
        var h = x + attn.Forward(ln_1.call(x), mask, cache);
        return (h + mlp.call(ln_2.call(h))).MoveToOuterDisposeScope();
    }
}

public sealed class Gpt2Model : nn.Module
{
    internal Module<Tensor, Tensor> wte, wpe;
    internal ModuleList<Gpt2Block> h;
    Module<Tensor, Tensor> ln_f;

    public Gpt2Model(ModelConfig c, ScalarType dtype) : base("GPT2Model")
    {
        wte = nn.Embedding(c.VocabSize, c.HiddenSize, dtype: dtype);
        wpe = nn.Embedding(c.MaxPositions, c.HiddenSize, dtype: dtype);
        h = new ModuleList<Gpt2Block>(Enumerable.Range(0, c.NumLayers).Select(i => new Gpt2Block(c, i, dtype)).ToArray());
        ln_f = nn.LayerNorm(c.HiddenSize, c.NormEps, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>Recompute each block's activations in backward instead of keeping them (training only).</summary>
    public bool GradientCheckpointing { get; set; }

    public Tensor Forward(ModelInputs inputs)
    {
        using var scope = NewDisposeScope();
        var x = inputs.InputsEmbeds ?? wte.call(inputs.InputIds!);
        long b = x.shape[0], t = x.shape[1], past = inputs.Cache?.Length ?? 0;
        var pos = inputs.PositionIds ?? arange(past, past + t, device: x.device).unsqueeze(0).expand(b, t);
        x = x + wpe.call(pos);
        var mask = AttentionMasks.Build(inputs, past, causal: true, x.dtype, x.device);
        bool checkpoint = GradientCheckpointing && ActivationCheckpoint.Applies(this, inputs);
        foreach (var block in h)
            x = checkpoint ? ActivationCheckpoint.Run(xs => block.Forward(xs[0]!, xs[1], null), x, mask) : block.Forward(x, mask, inputs.Cache);
        return ln_f.call(x).MoveToOuterDisposeScope();
    }
}

/// <summary>GPT-2 (Radford et al., 2019) with its head tied to the token embeddings.</summary>
public sealed class Gpt2LMHeadModel : PretrainedModel
{
    internal Gpt2Model transformer;
    Module<Tensor, Tensor> lm_head;

    public Gpt2LMHeadModel(ModelConfig c, ScalarType dtype = ScalarType.Float32) : base("GPT2LMHeadModel", c, dtype)
    {
        transformer = new Gpt2Model(c, dtype);
        var head = nn.Linear(c.HiddenSize, c.VocabSize, hasBias: false, dtype: dtype);
        if (c.TieWordEmbeddings) head.weight = ((Embedding)transformer.wte).weight!;
        lm_head = head;
        RegisterComponents();
    }

    public override IReadOnlyCollection<string> TiedWeights => Config.TieWordEmbeddings ? ["lm_head.weight"] : [];

    public override bool GradientCheckpointing { get => transformer.GradientCheckpointing; set => transformer.GradientCheckpointing = value; }

    public override Tensor Embed(Tensor inputIds) => transformer.wte.call(inputIds);

    public override Tensor Forward(ModelInputs inputs)
    {
        using var scope = NewDisposeScope();
        return lm_head.call(transformer.Forward(inputs)).MoveToOuterDisposeScope();
    }

    /// <summary>The head is fused with the loss only while it is a plain Linear (LoRA or modules_to_save wrap it).</summary>
    public override (Tensor Hidden, Linear Head)? HiddenAndHead(ModelInputs inputs) =>
        lm_head is Linear head ? (transformer.Forward(inputs), head) : null;
}
