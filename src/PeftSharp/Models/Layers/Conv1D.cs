using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;
using TorchSharp.Modules;

namespace PeftSharp.Models.Layers;

/// <summary>GPT-2's "Conv1D": a linear layer whose weight is stored transposed, [in, out]; y = x @ W + b.</summary>
public sealed class Conv1D : nn.Module<Tensor, Tensor>
{
    public Parameter weight;
    public Parameter bias;

    public Conv1D(long inFeatures, long outFeatures, ScalarType dtype) : base("Conv1D")
    {
        weight = new Parameter(empty(inFeatures, outFeatures, dtype: dtype).normal_(0, 0.02));
        bias = new Parameter(zeros(outFeatures, dtype: dtype));
        RegisterComponents();
    }

    public long InFeatures => weight.shape[0];
    public long OutFeatures => weight.shape[1];

    public override Tensor forward(Tensor x) => addmm(bias, x.reshape(-1, x.shape[^1]), weight, 1, 1).view([.. x.shape[..^1], OutFeatures]);
}
