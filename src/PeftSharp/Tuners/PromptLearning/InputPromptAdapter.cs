using PeftSharp.Models;
using PeftSharp.Peft;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.PromptLearning;

/// <summary>What makes the virtual tokens' vectors: a plain table (prompt tuning) or a reparameterisation (P-tuning).</summary>
public interface IVirtualTokenEncoder
{
    /// <summary>The virtual tokens' vectors, [n, dim].</summary>
    Tensor Encode();
    /// <summary>Loads a saved <c>prompt_embeddings</c> table, [n, dim].</summary>
    void LoadTable(Tensor table, string source);
    IEnumerable<Parameter> parameters(bool recurse = true);
    bool training { get; }
    void train(bool on = true);
}

/// <summary>
/// Prompt tuning and P-tuning at run time: the encoder's n vectors are prepended to the token embeddings, so logits
/// have n extra leading positions ([B, n+T, V]). With a KV cache, they are added on the first step only.
/// Saved as PEFT does: one tensor <c>prompt_embeddings</c> [n, dim], the encoder's output.
/// </summary>
public sealed class InputPromptAdapter(IVirtualTokenEncoder encoder, int numVirtualTokens) : IPromptAdapter
{
    public const string Key = "prompt_embeddings";

    public IVirtualTokenEncoder Encoder => encoder;
    public int NumVirtualTokens => numVirtualTokens;

    public Tensor Forward(PretrainedModel model, ModelInputs inputs)
    {
        using var scope = NewDisposeScope();
        // The encoder lives outside the model's module tree: it follows the model's train/eval mode here (LSTM dropout).
        if (encoder.training != model.training) encoder.train(model.training);
        if (inputs.Cache is { Length: > 0 })  // a later decode step: the virtual tokens are in the cache
            return model.Forward(VirtualTokens.AfterCachedVirtualTokens(inputs, numVirtualTokens)).MoveToOuterDisposeScope();
        return model.Forward(VirtualTokens.Prepend(model, inputs, encoder.Encode())).MoveToOuterDisposeScope();
    }

    public KvCache NewCache(PretrainedModel model, long batch) => model.NewCache();

    /// <summary>The table as inference computes it: an encoder with dropout (P-tuning's LSTM) is run in eval mode.</summary>
    public IEnumerable<(string Key, Tensor Value)> StateDict()
    {
        using var _ = no_grad();
        bool training = encoder.training;
        encoder.train(false);
        var table = encoder.Encode().detach();
        encoder.train(training);
        yield return (Key, table);
    }

    public void LoadStateDict(IReadOnlyDictionary<string, Tensor> tensors, string source)
    {
        if (!tensors.TryGetValue(Key, out var t))
            throw new InvalidDataException($"{source}: no tensor '{Key}'; tensors there: {string.Join(", ", tensors.Keys.Take(10))}");
        encoder.LoadTable(t, source);
    }

    public IEnumerable<Parameter> TrainableParameters() => encoder.parameters();
}
