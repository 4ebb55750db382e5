using PeftSharp.Models;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Peft;

/// <summary>
/// An adapter's state that lives at model level rather than in wrapped layers: prompt embeddings,
/// prefix encoders, VeRA's shared projections. Keys are the full saved names (e.g. "prompt_embeddings").
/// </summary>
public interface IAdapterExtras
{
    IEnumerable<(string Key, Tensor Value)> StateDict();
    void LoadStateDict(IReadOnlyDictionary<string, Tensor> tensors, string source);
    IEnumerable<Parameter> TrainableParameters();
}

/// <summary>Prompt-learning methods run the whole forward pass: they add virtual tokens to the inputs or the cache.</summary>
public interface IPromptAdapter : IAdapterExtras
{
    Tensor Forward(PretrainedModel model, ModelInputs inputs);
    /// <summary>A cache for generation, pre-filled if the method puts its virtual tokens there.</summary>
    KvCache NewCache(PretrainedModel model, long batch);
}
