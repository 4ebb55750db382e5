using System.CommandLine;
using System.Text.Json;
using PeftSharp.Analysis;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// <c>peftsharp analyze</c>: the spectra of fine-tuned weights against their base, and the intruder dimensions of
/// Shuttleworth et al. (PEFT's <c>reduce_intruder_dimension</c>); optionally writes the adapter with intruders scaled down.
/// </summary>
internal static class AnalyzeCommand
{
    public static Command Create()
    {
        var model = Options.Model();
        var adapter = Options.Adapter();
        var tuned = new Option<string>("--tuned") { Description = "a fully fine-tuned model folder to compare with --model instead of an adapter" }.Help(value: "<dir>");
        var json = new Option<bool>("--json") { Description = "print one JSON object instead of a table" };
        var plot = new Option<string>("--plot") { Description = "write a PNG of the singular spectra and intruders per matrix; with --routing, heatmaps of each routed layer's expert use" }.Help(value: "<file.png>");
        var topK = Options.WholeNumber("--top-k", "how many leading singular vectors of the tuned weight are checked for intruders")
            .Must(k => k >= 1, "must be at least 1").Help(defaultText: "10");
        var epsilon = Options.Number("--epsilon", "a tuned singular vector whose best |cosine| with the base ones is below this is an intruder")
            .Must(e => e > 0 && e <= 1, "must be in (0, 1]").Help(defaultText: "0.5");
        var reduce = Options.Number("--reduce-intruders", "write the adapter with its intruder components scaled by this lambda (PEFT's mitigation_lambda, e.g. 0.75) to --out")
            .Must(l => l is double d && double.IsFinite(d), "must be a finite number").Help(value: "<lambda>");
        var output = new Option<string>("--out") { Description = "folder for the adapter written by --reduce-intruders" }.Help(value: "<dir>");
        var routing = new Option<string>("--routing") { Description = "instead: per-layer expert/adapter usage of a routed --adapter (Poly, MixLoRA, MeteoRA) on these records" }.Help(value: "<data.jsonl>");
        var cmd = new Command("analyze", "Compare fine-tuned weights with the base: singular spectra, effective rank, intruder dimensions")
            { model, adapter, tuned, json, plot, topK, epsilon, reduce, output, routing };
        var tuco = new AnalyzeTuco();
        tuco.AddTo(cmd);
        cmd.SetAction(r =>
        {
            if (tuco.Requested(r)) return tuco.Run(r, r.GetValue(model)!, r.GetValue(adapter), r.GetValue(tuned), r.GetValue(json));
            if (r.GetValue(routing) is { } routingData) return Routing(r, r.GetValue(model)!, r.GetValue(adapter), routingData, r.GetValue(json), r.GetValue(plot));
            var modelDir = r.GetValue(model)!;
            var adapterDir = r.GetValue(adapter);
            var tunedDir = r.GetValue(tuned);
            if ((adapterDir is null) == (tunedDir is null)) throw new ArgumentException("give one of --adapter DIR (a LoRA adapter) or --tuned DIR (a fine-tuned model)");
            var lambda = r.GetValue(reduce);
            var outDir = r.GetValue(output);
            if (lambda is not null && adapterDir is null) throw new ArgumentException("--reduce-intruders works on a LoRA adapter: give --adapter DIR");
            if (lambda is not null && outDir is null) throw new ArgumentException("--reduce-intruders needs --out DIR for the new adapter");
            if (lambda is null && outDir is not null) throw new ArgumentException("--out is where --reduce-intruders writes; give --reduce-intruders LAMBDA too");
            if (outDir is not null) Options.CheckOutputFolder("--out", outDir);
            var plotPath = r.GetValue(plot);
            if (plotPath is not null) CheckPlotPath(plotPath);
            foreach (var (option, dir) in new[] { ("--model", modelDir), ("--adapter", adapterDir), ("--tuned", tunedDir) })
                if (dir is not null && !Directory.Exists(dir)) throw new DirectoryNotFoundException($"{option} {dir}: no such folder");

            var options = new IntruderOptions(r.GetValue(topK) ?? 10, r.GetValue(epsilon) ?? 0.5);
            var reports = adapterDir is not null
                ? IntruderAnalysis.AnalyzeAdapter(modelDir, adapterDir, options)
                : IntruderAnalysis.AnalyzeTuned(modelDir, tunedDir!, options);
            var stdout = r.InvocationConfiguration.Output;
            if (plotPath is not null) SpectrumPlot.Save(reports, options, plotPath);
            if (lambda is double l)
                IntruderMitigation.WriteReduced(modelDir, adapterDir!, outDir!, options, l);
            if (r.GetValue(json)) stdout.WriteLine(AnalysisJson.Serialize(reports, options));
            else
            {
                WriteTable(stdout, reports);
                if (plotPath is not null) stdout.WriteLine($"plot written to {plotPath}");
                if (lambda is double l2) stdout.WriteLine($"adapter with intruders scaled by {l2} written to {outDir}");
            }
            return 0;
        });
        return cmd;
    }

    static int Routing(ParseResult r, string modelDir, string? adapterDir, string data, bool json, string? plotPath)
    {
        if (adapterDir is null) throw new ArgumentException("--routing reports a routed adapter's usage: give --adapter DIR");
        foreach (var (option, path) in new[] { ("--model", modelDir), ("--adapter", adapterDir) })
            if (!Directory.Exists(path)) throw new DirectoryNotFoundException($"{option} {path}: no such folder");
        if (!File.Exists(data)) throw new FileNotFoundException($"--routing {data}: no such file", data);
        if (plotPath is not null) CheckPlotPath(plotPath);
        var tally = RoutingAnalysis.Tally(modelDir, adapterDir, data);
        var reports = tally.Layers;
        if (plotPath is not null) RoutingPlot.Save(tally, TokenLabels(modelDir), plotPath);
        var o = r.InvocationConfiguration.Output;
        if (json)
        {
            o.WriteLine(JsonSerializer.Serialize(reports.Select(x => new
            {
                module = x.Module, experts = x.Experts, decisions = x.Decisions, pick_share = x.PickShare, mean_weight = x.MeanWeight,
                by_task = x.ByTask.Count == 0 ? null : x.ByTask.ToDictionary(t => t.Key.ToString(),
                    t => new { decisions = t.Value.Decisions, pick_share = t.Value.PickShare, mean_weight = t.Value.MeanWeight }),
            }), new JsonSerializerOptions { DefaultIgnoreCondition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull }));
            return 0;
        }
        int width = Math.Max(6, reports.Max(x => x.Module.Length));
        o.WriteLine($"{"module".PadRight(width)}  {"routings",8}  share of routings that picked each expert (mean weight)");
        foreach (var x in reports)
        {
            o.WriteLine($"{x.Module.PadRight(width)}  {x.Decisions,8}  " +
                string.Join("  ", x.PickShare.Select((p, e) => $"{e}: {p * 100,5:F1}% ({x.MeanWeight[e]:F2})")));
            foreach (var (task, t) in x.ByTask)
                o.WriteLine($"{$"  task {task}".PadRight(width)}  {t.Decisions,8}  " +
                    string.Join("  ", t.PickShare.Select((p, e) => $"{e}: {p * 100,5:F1}% ({t.MeanWeight[e]:F2})")));
        }
        if (plotPath is not null)
        {
            int tasks = reports.SelectMany(x => x.ByTask.Keys).Distinct().Count();
            o.WriteLine($"plot written to {plotPath}" + (tasks > RoutingPlot.MaxTaskPanels ? $" (tasks: the first {RoutingPlot.MaxTaskPanels} of {tasks})" : ""));
        }
        return 0;
    }

    // An existing picture is replaced and a new folder created, but the picture may not be a folder nor lie under a file.
    static void CheckPlotPath(string plotPath)
    {
        if (Directory.Exists(plotPath)) throw new ArgumentException($"--plot {plotPath} is a folder; give a file name such as plot.png");
        if (!File.Exists(plotPath)) Options.CheckOutputFolder("--plot", plotPath);
    }

    // Token pieces as the tokenizer writes them, with byte-level BPE's space and newline marks made readable.
    static Func<long, string> TokenLabels(string modelDir)
    {
        if (!File.Exists(Path.Combine(modelDir, "tokenizer.json"))) return id => id.ToString();
        var tok = PeftSharp.Tokenization.HfTokenizer.Load(modelDir);
        return id =>
        {
            var piece = (tok.IdToToken((int)id) ?? id.ToString()).Replace('\u0120', '_').Replace('\u2581', '_').Replace("\u010a", "\\n").Replace("\u0109", "\\t");
            piece = System.Text.RegularExpressions.Regex.Replace(piece, "_{4,}", m => $"_x{m.Length}");   // indentation
            return piece.Length > 12 ? piece[..12] : piece;
        };
    }

    static void WriteTable(TextWriter o, List<LayerReport> reports)
    {
        if (reports.Count == 0) { o.WriteLine("no weight differs from the base"); return; }
        int width = Math.Max(6, reports.Max(x => x.Module.Length));
        o.WriteLine($"{"module".PadRight(width)}  {"shape",-11} {"eff. rank dW",12} {"intruders",9}  min cosine (top-k)");
        foreach (var x in reports)
            o.WriteLine($"{x.Module.PadRight(width)}  {$"{x.Rows}x{x.Cols}",-11} {x.DeltaEffectiveRank,12:F2} {x.IntruderCount,9}  {(x.Scan.Cosines.Length > 0 ? x.Scan.Cosines.Min() : 1):F3}");
        o.WriteLine($"total intruders: {reports.Sum(x => x.IntruderCount)} in {reports.Count(x => x.IntruderCount > 0)} of {reports.Count} matrices");
    }
}
