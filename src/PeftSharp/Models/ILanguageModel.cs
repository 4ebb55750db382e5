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

    /// <summary>
    /// Whether a cache holding <paramref name="cached"/> positions must be dropped and the whole sequence re-run to reach
    /// <paramref name="total"/> positions: LongRoPE (Phi-3) switches to its long factors past the original length, and
    /// keys cached under the short ones no longer fit, so transformers re-fills the cache once at that step.
    /// </summary>
    bool CacheExpires(long cached, long total) => false;
}
