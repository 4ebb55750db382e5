using static TorchSharp.torch;

namespace PeftSharp.Models;

/// <summary>What generation needs of a model: a forward pass and a fresh KV cache. Base models and adapted models both offer it.</summary>
public interface ILanguageModel
{
    Tensor Forward(ModelInputs inputs);
    KvCache NewCache();
    Device Device { get; }

    /// <summary>
    /// The final hidden states [B, T, H] and the plain linear head that turns them into logits, for losses that fuse the
    /// two (<see cref="Losses.CausalLMFused"/>); null where the head is adapted, absent or not the last step.
    /// </summary>
    (Tensor Hidden, TorchSharp.Modules.Linear Head)? HiddenAndHead(ModelInputs inputs) => null;
}
