using static TorchSharp.torch;

namespace PeftSharp.Tuners.AdaLora;

/// <summary>AdaLoRA's SVD-form update s · P (Λ ⊙ Q), shared by AdaLoRA and IncreLoRA (Q = lora_A, Λ = lora_E, P = lora_B).</summary>
internal static class SvdProduct
{
    /// <summary>s · P (Λ ⊙ Q) as an [out, in] matrix.</summary>
    public static Tensor Delta(Tensor a, Tensor e, Tensor b, double scale) => matmul(b, a * e) * scale;

    /// <summary>s · x (Λ ⊙ Q)ᵀ Pᵀ: through the rank first, never forming the [out, in] matrix.</summary>
    public static Tensor Apply(Tensor x, Tensor a, Tensor e, Tensor b, double scale) => matmul(matmul(x, (a * e).t()), b.t()) * scale;
}
