using PeftSharp.Tuners.PromptLearning;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace PeftSharp.Tuners.PrefixTuning;

/// <summary>
/// Makes the prefix: [n, layers * 2 * token_dim], every layer's keys then values (PEFT's <c>PrefixEncoder</c>).
/// Without projection it is a trained table; with it, transform(embedding) with transform = Linear, tanh, Linear.
/// </summary>
public sealed class PrefixEncoder : nn.Module, IVirtualTokenEncoder
{
    readonly bool projection;
    Embedding embedding;
    Sequential? transform;

    public PrefixEncoder(long n, long tokenDim, long layers, long encoderHidden, bool projection, bool zeroInit, Device device)
        : base("PrefixEncoder")
    {
        this.projection = projection;
        long width = layers * 2 * tokenDim;
        var f32 = ScalarType.Float32;
        embedding = nn.Embedding(n, projection ? tokenDim : width, device: device, dtype: f32);
        if (projection)
            transform = nn.Sequential(
                nn.Linear(tokenDim, encoderHidden, device: device, dtype: f32),
                nn.Tanh(),
                nn.Linear(encoderHidden, width, device: device, dtype: f32));
        if (zeroInit)
        {
            using var _ = no_grad();
            foreach (var p in projection ? ((Linear)transform![2]).parameters() : embedding.parameters()) p.zero_();
        }
        RegisterComponents();
    }

    public Tensor Encode() => projection ? transform!.call(embedding.weight!) : embedding.weight!;

    public void LoadTable(Tensor table, string source)
    {
        if (projection)
            throw new InvalidOperationException($"{source}: a saved prefix is the projection's output and cannot be loaded into a projection MLP");
        var w = embedding.weight!;
        if (!table.shape.SequenceEqual(w.shape))
            throw new InvalidDataException($"{source}: 'prompt_embeddings' has shape [{string.Join(",", table.shape)}] but this model needs " +
                $"[{string.Join(",", w.shape)}] (num_virtual_tokens, num_layers*2*token_dim): is the adapter for another model?");
        using var _ = no_grad();
        w.copy_(table);
    }
}
