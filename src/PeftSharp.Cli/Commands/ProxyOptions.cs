using System.CommandLine;
using PeftSharp.Generation.Composition;
using PeftSharp.Models;
using PeftSharp.Peft;
using static TorchSharp.torch;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// <c>--proxy-base SMALL (--proxy-adapter DIR | --proxy-tuned DIR) [--beta B] [--eft]</c>: decode --model steered by a
/// small tuned/untuned pair (proxy-tuning on logits, or EFT on log-probabilities), shared by <c>generate</c> and <c>logits</c>.
/// </summary>
internal sealed class ProxyOptions
{
    readonly Option<string> smallBase = new Option<string>("--proxy-base")
    {
        Description = "small untuned model folder: decode --model with scores + beta (small tuned - small base) (proxy-tuning); "
            + "it must share --model's vocabulary",
    }.Help(value: "<dir>");

    readonly Option<string> adapter = new Option<string>("--proxy-adapter")
    {
        Description = "adapter folder that makes --proxy-base the small tuned model (one model run with the adapter on and off)",
    }.Help(value: "<dir>");

    readonly Option<string> tuned = new Option<string>("--proxy-tuned")
    {
        Description = "small tuned model folder (instead of --proxy-adapter)",
    }.Help(value: "<dir>");

    readonly Option<double?> beta = Options.Number("--beta", "weight of the small models' difference (with --proxy-base; 0 = --model alone)")
        .Must(b => b is null || double.IsFinite(b.Value), "a finite number").Default(1.0, "1");

    readonly Option<bool> eft = new("--eft")
    {
        Description = "add log-probabilities (EFT up-scaling) instead of raw logits (proxy-tuning): the same distribution, "
            + "scores shifted by a constant per position (this changes --repetition-penalty and what logits writes)",
    };

    public void AddTo(Command cmd)
    {
        foreach (var o in new Option[] { smallBase, adapter, tuned, beta, eft }) cmd.Options.Add(o);
    }

    /// <summary>Checks the options and the vocabularies before any weights load; false when no proxy is asked for.</summary>
    public bool Check(ParseResult r, string largeDir, ModelConfig large)
    {
        var (b, a, t) = (r.GetValue(smallBase), r.GetValue(adapter), r.GetValue(tuned));
        if (b is null)
        {
            foreach (var (given, name) in new[] { (a is not null, "--proxy-adapter"), (t is not null, "--proxy-tuned"), (r.GetResult(beta) is { Implicit: false }, "--beta"), (r.GetValue(eft), "--eft") })
                if (given) throw new ArgumentException($"{name} needs --proxy-base SMALL (the small untuned model)");
            return false;
        }
        if ((a is null) == (t is null)) throw new ArgumentException("--proxy-base needs one of --proxy-adapter DIR (small + adapter) or --proxy-tuned DIR (a separate tuned model)");
        foreach (var dir in t is null ? new[] { b } : [b, t])
        {
            var vocab = ModelConfig.Load(dir).VocabSize;
            if (vocab != large.VocabSize)
                throw new ArgumentException($"{dir} has a vocabulary of {vocab} tokens but --model {largeDir} has {large.VocabSize}: proxy-tuning needs models that share a vocabulary");
        }
        return true;
    }

    /// <summary>The large model wrapped with the small pair (call after <see cref="Check"/> returned true).</summary>
    public LogitMix Wrap(ParseResult r, ILanguageModel large, ScalarType dtype, Device device)
    {
        var small = AutoModel.Load(r.GetValue(smallBase)!, dtype, device);
        ILanguageModel smallTuned, smallUntuned;
        if (r.GetValue(adapter) is { } dir)
        {
            var pm = PeftModel.FromPretrained(small, dir);
            (smallTuned, smallUntuned) = (pm, new AdaptersOff(pm));
        }
        else (smallTuned, smallUntuned) = (AutoModel.Load(r.GetValue(tuned)!, dtype, device), small);
        var delta = new ExpertDelta(smallTuned, smallUntuned, r.GetValue(beta) ?? 1.0);
        return new LogitMix(large, [delta], r.GetValue(eft) ? MixSpace.LogProbs : MixSpace.Logits);
    }
}
