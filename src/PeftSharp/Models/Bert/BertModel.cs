using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace PeftSharp.Models.Bert;

public sealed class BertEmbeddings : nn.Module
{
    internal Module<Tensor, Tensor> word_embeddings, position_embeddings, token_type_embeddings;
    Module<Tensor, Tensor> LayerNorm; // a plain module so that LN tuning can wrap it

    public BertEmbeddings(ModelConfig c, ScalarType dtype) : base("BertEmbeddings")
    {
        word_embeddings = nn.Embedding(c.VocabSize, c.HiddenSize, dtype: dtype);
        position_embeddings = nn.Embedding(c.MaxPositions, c.HiddenSize, dtype: dtype);
        token_type_embeddings = nn.Embedding(c.TypeVocabSize, c.HiddenSize, dtype: dtype);
        LayerNorm = nn.LayerNorm(c.HiddenSize, c.NormEps, dtype: dtype);
        RegisterComponents();
    }

    public Tensor Forward(ModelInputs inputs)
    {
        using var scope = NewDisposeScope();
        var x = inputs.InputsEmbeds ?? word_embeddings.call(inputs.InputIds!);
        long b = x.shape[0], t = x.shape[1];
        var pos = inputs.PositionIds ?? arange(t, device: x.device).unsqueeze(0).expand(b, t);
        var types = inputs.TokenTypeIds ?? zeros(b, t, ScalarType.Int64, device: x.device);
        x = x + token_type_embeddings.call(types) + position_embeddings.call(pos);
        return LayerNorm.call(x).MoveToOuterDisposeScope();
    }
}

public sealed class BertSelfAttention : nn.Module
{
    readonly int heads, headDim;
    Module<Tensor, Tensor> query, key, value;

    public BertSelfAttention(ModelConfig c, ScalarType dtype) : base("BertSelfAttention")
    {
        heads = c.NumHeads;
        headDim = c.HeadDim;
        query = nn.Linear(c.HiddenSize, c.HiddenSize, dtype: dtype);
        key = nn.Linear(c.HiddenSize, c.HiddenSize, dtype: dtype);
        value = nn.Linear(c.HiddenSize, c.HiddenSize, dtype: dtype);
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, Tensor? mask)
    {
        using var scope = NewDisposeScope();
        long b = x.shape[0], t = x.shape[1];
        var q = query.call(x).view(b, t, heads, headDim).transpose(1, 2); // (B, nh, T, hd)
        var k = key.call(x).view(b, t, heads, headDim).transpose(1, 2);
        var v = value.call(x).view(b, t, heads, headDim).transpose(1, 2);
        var y = nn.functional.scaled_dot_product_attention(q, k, v, mask);
        return y.transpose(1, 2).reshape(b, t, heads * headDim).MoveToOuterDisposeScope();
    }
}

/// <summary>dense + dropout, then LayerNorm over the residual: BERT's post-norm sub-layer output.</summary>
public sealed class BertResidualOutput : nn.Module
{
    Module<Tensor, Tensor> dense;
    Module<Tensor, Tensor> LayerNorm;

    public BertResidualOutput(long inFeatures, ModelConfig c, ScalarType dtype) : base("BertOutput")
    {
        dense = nn.Linear(inFeatures, c.HiddenSize, dtype: dtype);
        LayerNorm = nn.LayerNorm(c.HiddenSize, c.NormEps, dtype: dtype);
        RegisterComponents();
    }

    public Tensor Forward(Tensor h, Tensor residual) => LayerNorm.call(dense.call(h) + residual);
}

public sealed class BertAttention : nn.Module
{
    internal BertSelfAttention self;
    BertResidualOutput output;

    public BertAttention(ModelConfig c, ScalarType dtype) : base("BertAttention")
    {
        self = new BertSelfAttention(c, dtype);
        output = new BertResidualOutput(c.HiddenSize, c, dtype);
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, Tensor? mask) => output.Forward(self.Forward(x, mask), x);
}

public sealed class BertIntermediate : nn.Module<Tensor, Tensor>
{
    readonly string act;
    Module<Tensor, Tensor> dense;

    public BertIntermediate(ModelConfig c, ScalarType dtype) : base("BertIntermediate")
    {
        act = c.HiddenAct;
        if (act is not ("gelu" or "relu" or "gelu_new")) throw new NotSupportedException($"hidden_act '{act}' is not supported for bert");
        dense = nn.Linear(c.HiddenSize, c.IntermediateSize, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = dense.call(x);
        h = act switch { "relu" => nn.functional.relu(h), "gelu_new" => Layers.Activations.GeluTanh(h), _ => nn.functional.gelu(h) };
        return h.MoveToOuterDisposeScope();
    }
}

public sealed class BertLayer : nn.Module
{
    BertAttention attention;
    BertIntermediate intermediate;
    BertResidualOutput output;

    public BertLayer(ModelConfig c, ScalarType dtype) : base("BertLayer")
    {
        attention = new BertAttention(c, dtype);
        intermediate = new BertIntermediate(c, dtype);
        output = new BertResidualOutput(c.IntermediateSize, c, dtype);
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, Tensor? mask)
    {
        using var scope = NewDisposeScope();
        var a = attention.Forward(x, mask);
        return output.Forward(intermediate.call(a), a).MoveToOuterDisposeScope();
    }
}

public sealed class BertEncoder : nn.Module
{
    internal ModuleList<BertLayer> layer;

    public BertEncoder(ModelConfig c, ScalarType dtype) : base("BertEncoder")
    {
        layer = new ModuleList<BertLayer>(Enumerable.Range(0, c.NumLayers).Select(_ => new BertLayer(c, dtype)).ToArray());
        RegisterComponents();
    }
}

public sealed class BertPooler : nn.Module<Tensor, Tensor>
{
    Module<Tensor, Tensor> dense;

    public BertPooler(ModelConfig c, ScalarType dtype) : base("BertPooler")
    {
        dense = nn.Linear(c.HiddenSize, c.HiddenSize, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>tanh(dense(h[:, 0])): the [CLS] position stands for the sequence.</summary>
    public override Tensor forward(Tensor h) => tanh(dense.call(h[.., 0, ..]));
}

/// <summary>BERT encoder (Devlin et al., 2019): bidirectional post-norm transformer.</summary>
public sealed class BertModel : nn.Module
{
    internal BertEmbeddings embeddings;
    internal BertEncoder encoder;
    internal BertPooler pooler;

    public BertModel(ModelConfig c, ScalarType dtype) : base("BertModel")
    {
        embeddings = new BertEmbeddings(c, dtype);
        encoder = new BertEncoder(c, dtype);
        pooler = new BertPooler(c, dtype);
        RegisterComponents();
    }

    /// <summary>(last hidden state [B,T,H], pooled [B,H]).</summary>
    public (Tensor Hidden, Tensor Pooled) Forward(ModelInputs inputs)
    {
        using var scope = NewDisposeScope();
        var x = embeddings.Forward(inputs);
        var mask = AttentionMasks.Build(inputs, 0, causal: false, x.dtype, x.device);
        foreach (var l in encoder.layer) x = l.Forward(x, mask);
        var pooled = pooler.call(x);
        return (x.MoveToOuterDisposeScope(), pooled.MoveToOuterDisposeScope());
    }
}

/// <summary>BERT with a linear classifier over the pooled [CLS] state; logits [B, num_labels].</summary>
public sealed class BertForSequenceClassification : PretrainedModel
{
    internal BertModel bert;
    Module<Tensor, Tensor> classifier;

    public BertForSequenceClassification(ModelConfig c, ScalarType dtype = ScalarType.Float32)
        : base("BertForSequenceClassification", c, dtype)
    {
        bert = new BertModel(c, dtype);
        classifier = nn.Linear(c.HiddenSize, c.NumLabels, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor Embed(Tensor inputIds) => bert.embeddings.word_embeddings.call(inputIds);

    public override Tensor Forward(ModelInputs inputs)
    {
        using var scope = NewDisposeScope();
        var (_, pooled) = bert.Forward(inputs);
        return classifier.call(pooled).MoveToOuterDisposeScope();
    }
}
