using PeftSharp.Tuners.PromptLearning;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace PeftSharp.Tuners.PTuning;

/// <summary>
/// P-tuning's reparameterisation of n embeddings E [n, d] (PEFT's <c>PromptEncoder</c>):
/// MLP: W3 relu(W2 relu(W1 E)); LSTM: MLP(BiLSTM(E)) with MLP = W2 relu(W1 .) over the 2h LSTM features.
/// A loaded adapter holds the output only (<c>prompt_embeddings</c>), so it is a plain table (the constructor's <c>tableOnly</c>).
/// </summary>
public sealed class PromptEncoder : nn.Module, IVirtualTokenEncoder
{
    readonly string type;
    Embedding embedding;
    LSTM? lstm_head;
    Sequential? mlp_head;

    public PromptEncoder(long n, long tokenDim, PromptEncoderConfig c, bool tableOnly, Device device) : base("PromptEncoder")
    {
        type = tableOnly ? "TABLE" : c.EncoderReparameterizationType;
        long h = c.EncoderHiddenSize ?? tokenDim;
        var f32 = ScalarType.Float32;
        embedding = nn.Embedding(n, tokenDim, device: device, dtype: f32);
        switch (type)
        {
            case "TABLE": break;
            case "MLP":
                mlp_head = nn.Sequential(
                    nn.Linear(tokenDim, h, device: device, dtype: f32), nn.ReLU(),
                    nn.Linear(h, h, device: device, dtype: f32), nn.ReLU(),
                    nn.Linear(h, tokenDim, device: device, dtype: f32));
                break;
            case "LSTM":
                lstm_head = nn.LSTM(tokenDim, h, c.EncoderNumLayers, bias: true, batchFirst: true, dropout: c.EncoderDropout,
                    bidirectional: true, device: device, dtype: f32);
                mlp_head = nn.Sequential(
                    nn.Linear(2 * h, 2 * h, device: device, dtype: f32), nn.ReLU(),
                    nn.Linear(2 * h, tokenDim, device: device, dtype: f32));
                break;
            default:
                throw new ArgumentException($"P_TUNING: encoder_reparameterization_type '{type}' is not MLP or LSTM");
        }
        RegisterComponents();
    }

    public Tensor Encode()
    {
        var e = embedding.weight!;                                                  // (n, d)
        if (type == "TABLE") return e;
        if (type == "MLP") return mlp_head!.call(e);
        using var scope = NewDisposeScope();
        var (features, _, _) = lstm_head!.call(e.unsqueeze(0), null);              // (1, n, 2h)
        return mlp_head!.call(features.squeeze(0)).MoveToOuterDisposeScope();      // (n, d)
    }

    public void LoadTable(Tensor table, string source)
    {
        if (type != "TABLE")
            throw new InvalidOperationException($"{source}: a saved P-tuning prompt is the encoder's output and loads as a plain table only");
        var w = embedding.weight!;
        if (!table.shape.SequenceEqual(w.shape))
            throw new InvalidDataException($"{source}: 'prompt_embeddings' has shape [{string.Join(",", table.shape)}] but this adapter expects " +
                $"[{string.Join(",", w.shape)}] (num_virtual_tokens, token_dim): is it for another model?");
        using var _ = no_grad();
        w.copy_(table);
    }
}
