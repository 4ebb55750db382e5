using PeftSharp.Tuners.PromptLearning;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.PromptTuning;

/// <summary>Prompt tuning's parameters: a table of n virtual token embeddings (PEFT's <c>PromptEmbedding</c>).</summary>
public sealed class PromptEmbedding : nn.Module, IVirtualTokenEncoder
{
    Embedding embedding;

    /// <param name="initial">[n, dim] starting values, or null for N(0, 1).</param>
    public PromptEmbedding(long n, long dim, Device device, Tensor? initial = null) : base("PromptEmbedding")
    {
        embedding = nn.Embedding(n, dim, device: device, dtype: ScalarType.Float32);
        if (initial is not null)
        {
            using var _ = no_grad();
            embedding.weight!.copy_(initial);
        }
        RegisterComponents();
    }

    public Tensor Encode() => embedding.weight!;

    public void LoadTable(Tensor table, string source)
    {
        var w = embedding.weight!;
        if (!table.shape.SequenceEqual(w.shape))
            throw new InvalidDataException($"{source}: 'prompt_embeddings' has shape [{string.Join(",", table.shape)}] but this adapter expects " +
                $"[{string.Join(",", w.shape)}] (num_virtual_tokens, token_dim): is it for another model or another num_virtual_tokens?");
        using var _ = no_grad();
        w.copy_(table);
    }
}
