using TorchSharp.Modules;

namespace PeftSharp.Training;

/// <summary><c>--optim loraplus|lorafa|lorapro</c>: the optimizer each builds from a run's options and the model's LoRA layers.</summary>
public static class LowRankOptimizers
{
    public static IOptimizer Create(TrainingOptions o, TrainableModel model)
    {
        if (o.Optim is "lorafa" or "lorapro" && model.LowRankFactors.Count == 0)
            throw new ArgumentException($"option optim {o.Optim} works on LoRA layers (an update s * B @ A), and this adapter has none " +
                "(DoRA's is not of that form); use --optim auto or --method lora");
        if (o.Optim is "lorafa" or "lorapro" && !model.FixedParameterSet)
            throw new ArgumentException($"option optim {o.Optim} needs a fixed set of trainable parameters, and this method changes it as it trains");
        return o.Optim switch
        {
            "loraplus" => AdamW(o, model, model.Parameters, "loraplus",
                LoraPlus.Settings(model, o.LoraplusLrRatio, o.LoraplusLrEmbedding, o.LearningRate, o.WeightDecay)),
            "lorafa" => new LoraFa(model.Parameters, model.LowRankFactors, ps => AdamW(o, model, ps, "lorafa", null)),
            "lorapro" => new LoraPro(model.Parameters, model.LowRankFactors, o.AdamBeta1, o.AdamBeta2, o.AdamEpsilon, o.WeightDecay),
            _ => throw new ArgumentException($"option optim '{o.Optim}' is not a low-rank optimizer"),
        };
    }

    // Fused when the set of parameters is fixed, as --optim auto.
    static IOptimizer AdamW(TrainingOptions o, TrainableModel model, IReadOnlyList<(string Name, Parameter P)> ps, string name, Func<string, ParamSettings>? settings) =>
        model.FixedParameterSet
            ? new FusedAdamW(ps, o.AdamBeta1, o.AdamBeta2, o.AdamEpsilon, o.WeightDecay, o.Amsgrad, settings, name)
            : new Training.AdamW(ps, o.AdamBeta1, o.AdamBeta2, o.AdamEpsilon, o.WeightDecay, o.Amsgrad, settings, name);
}
