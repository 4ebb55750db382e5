using PeftSharp.Data;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tokenization;
using PeftSharp.Training;
using PeftSharp.Tuners;
using static TorchSharp.torch;

namespace PeftSharp.Analysis;

/// <summary>
/// How a routed adapter's layer spread the data over its experts (adapters, skills): <see cref="PickShare"/>[e] is the share
/// of routing decisions (tokens, or rows for task routing) that gave expert e a non-zero weight, <see cref="MeanWeight"/>[e]
/// its average weight. <see cref="Decisions"/> is how many routings were seen.
/// </summary>
public sealed record RoutingReport(string Module, int Experts, long Decisions, double[] PickShare, double[] MeanWeight);

/// <summary><c>analyze --routing</c>: runs records through a routed adapter (Poly, MixLoRA, MeteoRA) and tallies each layer's routing.</summary>
public static class RoutingAnalysis
{
    /// <param name="dataPath">records as for training (a <c>task_id</c> each where the method routes by task).</param>
    public static List<RoutingReport> Run(string modelDir, string adapterDir, string dataPath, int maxLength = 256, int batchSize = 8)
    {
        var model = AutoModel.Load(modelDir);
        model.eval();
        var peft = PeftModel.FromPretrained(model, adapterDir);
        var tok = File.Exists(Path.Combine(modelDir, "tokenizer.json"))
            ? FineTune.TokenizerFunctionsFor(HfTokenizer.Load(modelDir), "causal_lm")
            : TokenizerFunctions.None(model.Config.PadTokenId ?? 0, $"{modelDir} has no tokenizer.json");
        var data = TrainingDataset.Load(new DataOptions { TrainPath = dataPath, EvalRatio = 0, MaxLength = maxLength, VocabSize = model.Config.VocabSize }, tok).Train;
        return Run(peft, data, batchSize);
    }

    /// <summary>Tallies the routing of <paramref name="peft"/> over <paramref name="data"/> (the model is run in evaluation mode).</summary>
    public static List<RoutingReport> Run(PeftModel peft, BatchSource data, int batchSize = 8)
    {
        var paths = peft.TunerLayers().ToDictionary(x => x.Layer, x => x.Path);
        var tallies = new Dictionary<ITunerLayer, (Tensor Picks, Tensor Weights, long Count)>();
        peft.Routing.Observer = (layer, _, w) =>
        {
            var picks = w.gt(0).sum([0]).to(ScalarType.Float64).cpu();
            var weights = w.sum([0]).to(ScalarType.Float64).cpu();
            if (tallies.TryGetValue(layer, out var t))
            {
                t.Picks.add_(picks); t.Weights.add_(weights);
                tallies[layer] = (t.Picks, t.Weights, t.Count + w.shape[0]);
            }
            else tallies[layer] = (picks.DetachFromDisposeScope(), weights.DetachFromDisposeScope(), w.shape[0]);
        };
        try
        {
            peft.Base.eval();
            var order = data.EpochOrder(0, 0, shuffle: false);
            for (int i = 0; i < data.MicroBatchesPerEpoch(batchSize); i++)
            {
                using var scope = NewDisposeScope();
                using var _ = no_grad();
                using var b = data.MicroBatch(order, i, batchSize);
                peft.Forward(new ModelInputs
                {
                    InputIds = b.InputIds.to(peft.Device), AttentionMask = b.AttentionMask.to(peft.Device), TaskIds = b.TaskIds?.to(peft.Device),
                });
            }
        }
        finally { peft.Routing.Observer = null; }
        if (tallies.Count == 0)
            throw new InvalidOperationException($"adapter '{string.Join(", ", peft.ActiveAdapters)}' ({string.Join(", ", peft.Configs.Values.Select(c => c.PeftType).Distinct())}) routes nothing: --routing is for Poly, MixLoRA and MeteoRA");
        return tallies.Select(kv => new RoutingReport(paths[kv.Key], (int)kv.Value.Picks.shape[0], kv.Value.Count,
                (kv.Value.Picks / kv.Value.Count).data<double>().ToArray(), (kv.Value.Weights / kv.Value.Count).data<double>().ToArray()))
            .OrderBy(r => r.Module, StringComparer.Ordinal).ToList();
    }
}
