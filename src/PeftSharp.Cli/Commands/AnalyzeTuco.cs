using System.CommandLine;
using System.Text.Json;
using PeftSharp.Generation.Composition;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tokenization;
using static TorchSharp.torch;

namespace PeftSharp.Cli.Commands;

/// <summary><c>peftsharp analyze --tuco --prompt TEXT --adapter DIR</c>: the Tuning Contribution of one prompt, per block.</summary>
internal sealed class AnalyzeTuco
{
    readonly Option<bool> tuco = new("--tuco") { Description = "measure the adapter's Tuning Contribution (TuCo) to --prompt, per block and in all" };
    readonly Option<string> prompt = new Option<string>("--prompt") { Description = "the prompt --tuco measures (its last token), encoded with the model's tokenizer" }.Help(value: "<text>");

    public void AddTo(Command cmd)
    {
        cmd.Options.Add(tuco);
        cmd.Options.Add(prompt);
    }

    public bool Requested(ParseResult r)
    {
        if (!r.GetValue(tuco) && r.GetValue(prompt) is not null) throw new ArgumentException("--prompt is what --tuco measures; give --tuco too");
        return r.GetValue(tuco);
    }

    public int Run(ParseResult r, string modelDir, string? adapterDir, string? tunedDir, bool json)
    {
        if (adapterDir is null || tunedDir is not null) throw new ArgumentException("--tuco measures an adapter against its base: give --adapter DIR (not --tuned)");
        var text = r.GetValue(prompt) ?? throw new ArgumentException("--tuco needs --prompt TEXT");
        foreach (var (option, dir) in new[] { ("--model", modelDir), ("--adapter", adapterDir) })
            if (!Directory.Exists(dir)) throw new DirectoryNotFoundException($"{option} {dir}: no such folder");
        if (!File.Exists(Path.Combine(modelDir, "tokenizer.json"))) throw new ArgumentException($"--prompt needs {modelDir}/tokenizer.json");
        var tokenizer = HfTokenizer.Load(modelDir);
        var ids = tokenizer.Encode(text, addSpecialTokens: false);
        if (tokenizer.BosId is { } bos) ids = [bos, .. ids];
        if (ids.Length == 0) throw new ArgumentException("--prompt is empty and the tokenizer has no BOS token: nothing to measure");

        var model = PeftModel.FromPretrained(AutoModel.Load(modelDir), adapterDir);
        using var input = tensor(ids.Select(i => (long)i).ToArray()).unsqueeze(0);
        var report = TuningContribution.Measure(model, input);
        var o = r.InvocationConfiguration.Output;
        if (json)
        {
            o.WriteLine(JsonSerializer.Serialize(new
            {
                tuco = report.TuCo, ptc_l1 = report.Ptc, ftc_l1 = report.Ftc, tokens = ids.Length,
                layers = report.Layers.Select(l => new { layer = l.Layer, ptc_l1 = l.Ptc, ftc_l1 = l.Ftc, share = l.Share }),
            }));
            return 0;
        }
        o.WriteLine($"{"layer",5} {"|PTC|",12} {"|FTC|",12} {"FTC share",10}");
        foreach (var l in report.Layers) o.WriteLine($"{l.Layer,5} {l.Ptc,12:G5} {l.Ftc,12:G5} {l.Share,10:F4}");
        o.WriteLine($"TuCo {report.TuCo:F4} (|sum FTC| {report.Ftc:G5}, |sum PTC| {report.Ptc:G5}, last of {ids.Length} tokens)");
        return 0;
    }
}
