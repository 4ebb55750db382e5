using System.CommandLine;
using System.Globalization;
using PeftSharp.Generation.Composition;
using PeftSharp.Models;
using PeftSharp.Peft;
using static TorchSharp.torch;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// <c>--proxy-base SMALL (--proxy-adapter DIR | --proxy-tuned DIR)... [--beta B] [--eft] [--dynamic-fusion]</c>: decode
/// --model steered by small tuned/untuned pairs (proxy-tuning on logits, EFT on log-probabilities, or dynamic logit
/// fusion with weights solved per token), shared by <c>generate</c> and <c>logits</c>.
/// </summary>
internal sealed class ProxyOptions
{
    readonly Option<string> smallBase = new Option<string>("--proxy-base")
    {
        Description = "small untuned model folder: decode --model with scores + beta (small tuned - small base) (proxy-tuning); "
            + "it must share --model's vocabulary",
    }.Help(value: "<dir>");

    readonly Option<string[]> adapters = new Option<string[]>("--proxy-adapter")
    {
        Description = "adapter folder that makes --proxy-base a small tuned model (one model run with the adapter on and off); "
            + "repeat for several experts",
        AllowMultipleArgumentsPerToken = false,
    }.Help(value: "<dir>");

    readonly Option<string[]> tuned = new Option<string[]>("--proxy-tuned")
    {
        Description = "small tuned model folder (instead of, or next to, --proxy-adapter); repeat for several experts",
        AllowMultipleArgumentsPerToken = false,
    }.Help(value: "<dir>");

    readonly Option<double?> beta = Options.Number("--beta", "weight of each small tuned model's difference from --proxy-base (0 = --model alone)")
        .Must(b => b is null || double.IsFinite(b.Value), "a finite number").Default(1.0, "1");

    readonly Option<bool> eft = new("--eft")
    {
        Description = "add log-probabilities (EFT up-scaling) instead of raw logits (proxy-tuning): the same distribution, "
            + "scores shifted by a constant per position (this changes --repetition-penalty and what logits writes)",
    };

    readonly Option<bool> dynamic = new("--dynamic-fusion")
    {
        Description = "solve each expert's weight at every token instead of a fixed --beta (Fan et al. 2024): the large model moves "
            + "from its own distribution as far, in KL both ways, as fine-tuning moved the small one",
    };

    readonly Option<string> grid = new Option<string>("--fusion-grid")
    {
        Description = "weights searched per token with --dynamic-fusion, as MIN:MAX:STEP",
    }.Help(value: "<min:max:step>", defaultText: "0:2:0.1");

    readonly Option<string> search = new Option<string>("--fusion-search")
    {
        Description = "with several experts: 'one' tries one expert at a time (the paper's search), 'joint' every combination",
    }.Help(value: "one|joint", defaultText: "one");

    public void AddTo(Command cmd)
    {
        foreach (var o in new Option[] { smallBase, adapters, tuned, beta, eft, dynamic, grid, search }) cmd.Options.Add(o);
    }

    /// <summary>Checks the options and the vocabularies before any weights load; false when no small model is asked for.</summary>
    public bool Check(ParseResult r, string largeDir, ModelConfig large)
    {
        var (b, a, t) = (r.GetValue(smallBase), r.GetValue(adapters) ?? [], r.GetValue(tuned) ?? []);
        bool betaGiven = r.GetResult(beta) is { Implicit: false };
        if (b is null)
        {
            foreach (var (given, name) in new[] { (a.Length > 0, "--proxy-adapter"), (t.Length > 0, "--proxy-tuned"), (betaGiven, "--beta"), (r.GetValue(eft), "--eft"),
                         (r.GetValue(dynamic), "--dynamic-fusion"), (r.GetValue(grid) is not null, "--fusion-grid"), (r.GetValue(search) is not null, "--fusion-search") })
                if (given) throw new ArgumentException($"{name} needs --proxy-base SMALL (the small untuned model)");
            return false;
        }
        if (a.Length + t.Length == 0)
            throw new ArgumentException("--proxy-base needs --proxy-adapter DIR (small + adapter) or --proxy-tuned DIR (a separate tuned model), once per expert");
        if (r.GetValue(dynamic))
        {
            if (betaGiven) throw new ArgumentException("--beta is fixed, --dynamic-fusion solves the weights per token: give one of them");
            if (r.GetValue(eft)) throw new ArgumentException("--dynamic-fusion adds raw logits (the distribution is the same in log-probabilities): leave out --eft");
            Grid(r).Candidates(a.Length + t.Length);   // a joint search too large to run fails here
        }
        else foreach (var (given, name) in new[] { (r.GetValue(grid) is not null, "--fusion-grid"), (r.GetValue(search) is not null, "--fusion-search") })
                if (given) throw new ArgumentException($"{name} sets how --dynamic-fusion searches: add --dynamic-fusion");
        foreach (var dir in t.Prepend(b))
        {
            var vocab = ModelConfig.Load(dir).VocabSize;
            if (vocab != large.VocabSize)
                throw new ArgumentException($"{dir} has a vocabulary of {vocab} tokens but --model {largeDir} has {large.VocabSize}: proxy-tuning needs models that share a vocabulary");
        }
        foreach (var dir in a)
            if (!File.Exists(Path.Combine(dir, "adapter_config.json")))
                throw new FileNotFoundException($"--proxy-adapter {dir}: no adapter_config.json there (a small model fine-tuned in full goes to --proxy-tuned)");
        return true;
    }

    /// <summary>The large model wrapped with the small models (call after <see cref="Check"/> returned true).</summary>
    public ILanguageModel Wrap(ParseResult r, ILanguageModel large, ScalarType dtype, Device device)
    {
        var small = AutoModel.Load(r.GetValue(smallBase)!, dtype, device);
        var (adapterDirs, tunedDirs) = (r.GetValue(adapters) ?? [], r.GetValue(tuned) ?? []);
        var experts = new List<ILanguageModel>();
        ILanguageModel untuned = small;
        if (adapterDirs.Length > 0)
        {
            // All adapters load into one small model; with one, it runs as is, with several each runs as its own view.
            var pm = PeftModel.FromPretrained(small, adapterDirs[0], "expert0");
            for (int i = 1; i < adapterDirs.Length; i++) pm.LoadAdapter(adapterDirs[i], $"expert{i}");
            untuned = new AdaptersOff(pm);
            experts.AddRange(adapterDirs.Length == 1 ? [pm] : adapterDirs.Select((_, i) => (ILanguageModel)new AdapterView(pm, $"expert{i}")));
        }
        experts.AddRange(tunedDirs.Select(dir => AutoModel.Load(dir, dtype, device)));
        if (r.GetValue(dynamic)) return new DynamicLogitFusion(large, untuned, experts, Grid(r));
        var b = r.GetValue(beta) ?? 1.0;
        return new LogitMix(large, [.. experts.Select(e => new ExpertDelta(e, untuned, b))], r.GetValue(eft) ? MixSpace.LogProbs : MixSpace.Logits);
    }

    FusionGrid Grid(ParseResult r)
    {
        var mode = r.GetValue(search) switch
        {
            null or "one" => FusionSearch.OneExpert,
            "joint" => FusionSearch.Joint,
            var s => throw new ArgumentException($"--fusion-search {s}: give 'one' or 'joint'"),
        };
        if (r.GetValue(grid) is not { } text) return new FusionGrid(Search: mode);
        var parts = text.Split(':');
        var numbers = parts.Select(p => double.TryParse(p, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) ? v : double.NaN).ToArray();
        if (parts.Length != 3 || numbers.Any(double.IsNaN))
            throw new ArgumentException($"--fusion-grid {text}: give MIN:MAX:STEP, e.g. 0:2:0.1");
        var g = new FusionGrid(numbers[0], numbers[1], numbers[2], mode);
        return g.Problem() is { } problem ? throw new ArgumentException($"--fusion-grid {text}: {problem}") : g;
    }
}
