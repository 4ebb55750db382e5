using static TorchSharp.torch;

namespace PeftSharp.Models;

/// <summary>What generation needs of a model: a forward pass and a fresh KV cache. Base models and adapted models both offer it.</summary>
public interface ILanguageModel
{
    Tensor Forward(ModelInputs inputs);
    KvCache NewCache();
    Device Device { get; }
}
