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
/// of routing decisions (real tokens, or rows for task routing) that gave expert e a non-zero weight, <see cref="MeanWeight"/>[e]
/// its average weight. <see cref="Decisions"/> is how many routings were seen.
/// </summary>
public sealed record RoutingReport(string Module, int Experts, long Decisions, double[] PickShare, double[] MeanWeight)
{
    /// <summary>The same tally over the routings of each task id the records carry; empty when they carry none.</summary>
    public IReadOnlyDictionary<long, RoutingReport> ByTask { get; init; } = new SortedDictionary<long, RoutingReport>();

    /// <summary>For a per-token router: the expert of largest weight for each real token of the first record; else empty.</summary>
    public int[] FirstRecordTop1 { get; init; } = [];
}

/// <summary>Each routed layer's tally in model order, and the first record's token ids (the columns of <see cref="RoutingReport.FirstRecordTop1"/>).</summary>
public sealed record RoutingTally(IReadOnlyList<RoutingReport> Layers, long[] FirstRecordIds);

/// <summary><c>analyze --routing</c>: runs records through a routed adapter (Poly, MixLoRA, MeteoRA) and tallies each layer's routing.</summary>
public static class RoutingAnalysis
{
    /// <param name="dataPath">records as for training (a <c>task_id</c> each where the method routes by task).</param>
    public static List<RoutingReport> Run(string modelDir, string adapterDir, string dataPath, int maxLength = 256, int batchSize = 8) =>
        [.. Tally(modelDir, adapterDir, dataPath, maxLength, batchSize).Layers];

    /// <inheritdoc cref="Run(string, string, string, int, int)"/>
    public static RoutingTally Tally(string modelDir, string adapterDir, string dataPath, int maxLength = 256, int batchSize = 8)
    {
        var model = AutoModel.Load(modelDir);
        model.eval();
        var peft = PeftModel.FromPretrained(model, adapterDir);
        var tok = File.Exists(Path.Combine(modelDir, "tokenizer.json"))
            ? FineTune.TokenizerFunctionsFor(HfTokenizer.Load(modelDir), "causal_lm")
            : TokenizerFunctions.None(model.Config.PadTokenId ?? 0, $"{modelDir} has no tokenizer.json");
        var data = TrainingDataset.Load(new DataOptions { TrainPath = dataPath, EvalRatio = 0, MaxLength = maxLength, VocabSize = model.Config.VocabSize }, tok).Train;
        return Tally(peft, data, batchSize);
    }

    /// <summary>Tallies the routing of <paramref name="peft"/> over <paramref name="data"/> (the model is run in evaluation mode).</summary>
    public static List<RoutingReport> Run(PeftModel peft, BatchSource data, int batchSize = 8) => [.. Tally(peft, data, batchSize).Layers];

    /// <inheritdoc cref="Run(PeftModel, BatchSource, int)"/>
    public static RoutingTally Tally(PeftModel peft, BatchSource data, int batchSize = 8)
    {
        var layers = peft.TunerLayers().ToList();
        var tallies = new Dictionary<ITunerLayer, LayerTally>();
        Batch? batch = null;
        bool first = true;
        peft.Routing.Observer = (layer, _, w) =>
        {
            if (!tallies.TryGetValue(layer, out var t)) tallies[layer] = t = new LayerTally((int)w.shape[1]);
            t.Add(w, batch!, first);
        };
        long[] firstIds = [];
        try
        {
            peft.Base.eval();
            var order = data.EpochOrder(0, 0, shuffle: false);
            for (int i = 0; i < data.MicroBatchesPerEpoch(batchSize); i++)
            {
                using var scope = NewDisposeScope();
                using var _ = no_grad();
                using var b = data.MicroBatch(order, i, batchSize);
                batch = b;
                first = i == 0;
                peft.Forward(new ModelInputs
                {
                    InputIds = b.InputIds.to(peft.Device), AttentionMask = b.AttentionMask.to(peft.Device), TaskIds = b.TaskIds?.to(peft.Device),
                });
                if (first) firstIds = b.InputIds[0].masked_select(b.AttentionMask[0].gt(0)).data<long>().ToArray();
            }
        }
        finally { peft.Routing.Observer = null; }
        if (tallies.Count == 0)
            throw new InvalidOperationException($"adapter '{string.Join(", ", peft.ActiveAdapters)}' ({string.Join(", ", peft.Configs.Values.Select(c => c.PeftType).Distinct())}) routes nothing: --routing is for Poly, MixLoRA and MeteoRA");
        // Model order (layers.2 before layers.10), as a reader walks the network.
        var reports = layers.Where(l => tallies.ContainsKey(l.Layer)).Select(l => tallies[l.Layer].Report(l.Path)).ToList();
        return new RoutingTally(reports, firstIds);
    }

    /// <summary>One layer's running sums. A routing of N = B·T rows is per token (padding left out), of N = B rows per batch row.</summary>
    sealed class LayerTally(int experts)
    {
        readonly Sums all = new(experts);
        readonly SortedDictionary<long, Sums> byTask = [];
        int[] firstTop1 = [];

        public void Add(Tensor w, Batch b, bool firstBatch)
        {
            using var scope = NewDisposeScope();
            long rows = b.InputIds.shape[0], length = b.InputIds.shape[1];
            var weights = w.to(ScalarType.Float64).cpu();
            Tensor keep, tasks;
            var rowTasks = b.TaskIds ?? zeros(rows, ScalarType.Int64);
            if (weights.shape[0] == rows)
            {
                keep = ones(rows, ScalarType.Bool);
                tasks = rowTasks;
            }
            else if (weights.shape[0] == rows * length)
            {
                keep = b.AttentionMask.reshape(-1).gt(0);
                tasks = rowTasks.repeat_interleave(length);
                if (firstBatch) firstTop1 = weights.narrow(0, 0, length).argmax(-1).masked_select(b.AttentionMask[0].gt(0)).to(ScalarType.Int32).data<int>().ToArray();
            }
            else throw new InvalidOperationException($"a routing of {weights.shape[0]} rows fits neither the batch's {rows} rows nor its {rows * length} tokens");
            var idx = keep.nonzero().squeeze(1);
            weights = weights.index_select(0, idx);
            tasks = tasks.index_select(0, idx);
            all.Add(weights);
            if (b.TaskIds is null) return;
            foreach (var task in tasks.unique().Item1.data<long>().ToArray())
            {
                if (!byTask.TryGetValue(task, out var s)) byTask[task] = s = new Sums(experts);
                s.Add(weights.index_select(0, tasks.eq(task).nonzero().squeeze(1)));
            }
        }

        public RoutingReport Report(string module) => all.Report(module) with
        {
            ByTask = new SortedDictionary<long, RoutingReport>(byTask.ToDictionary(kv => kv.Key, kv => kv.Value.Report(module))),
            FirstRecordTop1 = firstTop1,
        };
    }

    sealed class Sums(int experts)
    {
        readonly double[] picks = new double[experts], weights = new double[experts];
        long count;

        public void Add(Tensor w)
        {
            var p = w.gt(0).sum([0]).to(ScalarType.Float64).data<double>().ToArray();
            var s = w.sum([0]).data<double>().ToArray();
            for (int e = 0; e < p.Length; e++) { picks[e] += p[e]; weights[e] += s[e]; }
            count += w.shape[0];
        }

        public RoutingReport Report(string module) =>
            new(module, picks.Length, count, [.. picks.Select(p => p / count)], [.. weights.Select(x => x / count)]);
    }
}
