using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;
using TorchSharp.Modules;

namespace PeftSharp.Models;

/// <summary>What every architecture offers the tuners, the trainer and the CLI.</summary>
public abstract class PretrainedModel : nn.Module, ILanguageModel
{
    protected PretrainedModel(string name, ModelConfig config, ScalarType dtype) : base(name)
    {
        Config = config;
        DType = dtype;
    }

    public ModelConfig Config { get; }
    public ScalarType DType { get; private set; }

    /// <summary>Logits: [B, T, vocab] for language models, [B, labels] for classifiers.</summary>
    public abstract Tensor Forward(ModelInputs inputs);

    /// <inheritdoc cref="ILanguageModel.HiddenAndHead"/>
    public virtual (Tensor Hidden, Linear Head)? HiddenAndHead(ModelInputs inputs) => null;

    /// <summary>A cache sized for this model's layers; prefix-style adapters pre-fill it.</summary>
    public virtual KvCache NewCache() => new(Config.NumLayers);

    public Device Device => parameters().First().device;

    /// <inheritdoc cref="ILanguageModel.CacheExpires"/>
    public virtual bool CacheExpires(long cached, long total) => false;

    /// <summary>Token embeddings [B, T, H] of ids, as the model's input layer computes them.</summary>
    public abstract Tensor Embed(Tensor inputIds);

    /// <summary>Names of weights that share storage with another (tied embeddings): written once, as transformers does.</summary>
    public virtual IReadOnlyCollection<string> TiedWeights => [];

    /// <summary>
    /// Trade compute for memory in training: each decoder layer keeps only its input and recomputes the rest in the
    /// backward pass (<see cref="ActivationCheckpoint"/>). Off in evaluation and under no_grad whatever this says.
    /// </summary>
    public virtual bool GradientCheckpointing
    {
        get => false;
        set { if (value) throw new NotSupportedException($"gradient checkpointing is not implemented for {Config.Architecture}"); }
    }

    public bool IsCausalLM => this is not Bert.BertForSequenceClassification;

    /// <summary>Parameter count (tied weights counted once).</summary>
    public long ParameterCount() => DistinctParameters().Sum(p => p.numel());

    internal IEnumerable<Parameter> DistinctParameters()
    {
        var tied = TiedWeights;
        foreach (var (name, p) in named_parameters())
            if (!tied.Any(t => name == t || name.StartsWith(t[..t.LastIndexOf('.')] + ".base_layer.", StringComparison.Ordinal))) yield return p;
    }

    internal void SetDType(ScalarType dtype) => DType = dtype;
}
