using static TorchSharp.torch;

namespace PeftSharp.Models.Decoder;

/// <summary>What a layer's attention needs besides its input: the RoPE tables and the mask of its kind (global or sliding).</summary>
public sealed record LayerInputs(Tensor Cos, Tensor Sin, Tensor? Mask);

/// <summary>One block of a decoder-only transformer, as <see cref="DecoderStack"/> runs it.</summary>
public interface IDecoderLayer
{
    /// <param name="x">[B, T, H]</param>
    /// <returns>[B, T, H]</returns>
    Tensor Forward(Tensor x, LayerInputs inputs, KvCache? cache);
}
