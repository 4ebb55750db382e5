using PeftSharp.Training;
using PeftSharp.Tuners;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Training.Optimizers;

/// <summary>
/// Two LoRA layers as the low-rank optimizers see them, without a model: a linear one (frozen W0 plus s B A and a trained
/// bias) and an embedding one, named as PEFT names them, with a loss whose gradients change from step to step.
/// </summary>
internal sealed class LowRankToy
{
    public const string LinA = "l.lora_A.default.weight", LinB = "l.lora_B.default.weight", Bias = "l.base_layer.bias";
    public const string EmbA = "e.lora_embedding_A.default", EmbB = "e.lora_embedding_B.default";
    public const double LinScaling = 2.0, EmbScaling = 0.5;

    public readonly Tensor W0;
    public readonly List<(string Name, Parameter P)> Parameters;

    public LowRankToy(long seed)
    {
        using var g = new Generator((ulong)seed);
        W0 = randn([7, 6], generator: g);
        Parameters =
        [
            (LinA, new Parameter(randn([3, 6], generator: g) * 0.5)),
            (LinB, new Parameter(randn([7, 3], generator: g) * 0.5)),   // non-zero, so A gets a gradient from the start
            (Bias, new Parameter(randn([7], generator: g) * 0.1)),
            (EmbA, new Parameter(randn([2, 10], generator: g))),
            (EmbB, new Parameter(randn([6, 2], generator: g) * 0.5)),
        ];
    }

    public Parameter this[string name] => Parameters.Single(p => p.Name == name).P;

    public static IReadOnlyList<LowRankFactors> Factors =>
        [new(LinA, LinB, LinScaling, Embedding: false), new(EmbA, EmbB, EmbScaling, Embedding: true)];

    public TrainableModel Trainable() =>
        new(Parameters, _ => throw new NotSupportedException(), _ => { })
        {
            LowRankFactors = Factors,
            NoDecay = new HashSet<string> { Bias },
        };

    /// <summary>A copy with the same values, new tensors.</summary>
    public LowRankToy Clone()
    {
        var c = new LowRankToy(0);
        using var _ = no_grad();
        for (var i = 0; i < Parameters.Count; i++) c.Parameters[i].P.copy_(Parameters[i].P);
        c.W0.copy_(W0);
        return c;
    }

    /// <summary>Embeds token ids, runs the adapted linear layer, and regresses on a target that depends on the step.</summary>
    public void Backward(int step)
    {
        using var scope = NewDisposeScope();
        using var g = new Generator((ulong)(1000 + step));
        var ids = randint(0, 10, [5], generator: g);
        var embedding = (matmul(this[EmbB], this[EmbA]).t() * EmbScaling).index_select(0, ids);      // [5, 6]
        var weight = W0 + matmul(this[LinB], this[LinA]) * LinScaling;                              // [7, 6]
        var y = nn.functional.linear(embedding.tanh(), weight, this[Bias]);
        var target = randn([5, 7], generator: g);
        (y - target).pow(2).sum().backward();
    }

    public void Train(IOptimizer opt, int from, int to)
    {
        for (var t = from; t < to; t++)
        {
            opt.ZeroGrad();
            Backward(t);
            GradClip.ClipGradientsTensor(opt.Gradients(), 5.0).Dispose();
            opt.Step(1e-2 * (1 + t % 3));
        }
    }
}
