using PeftSharp.Generation;
using PeftSharp.Generation.Composition;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Benchmarks;

/// <summary>
/// <c>fusion</c>: what decoding-time composition costs. Cached greedy generation on tinycode-3m (the "large" model and
/// the small base are the same weights, the experts random LoRAs): the model alone, proxy-tuning with one expert, and
/// dynamic logit fusion with one and two experts; then the weight search alone per token at real vocabulary sizes.
/// Options: <c>--new-tokens N</c> (default 32), <c>--runs N</c> (default 3).
/// </summary>
internal static class FusionBenchmark
{
    public static int Run(string[] args)
    {
        int newTokens = Measure.Arg(args, "--new-tokens", 32), runs = Measure.Arg(args, "--runs", 3);
        manual_seed(0);
        var dir = Measure.ModelDir("tinycode-3m");
        var large = AutoModel.Load(dir);
        var small = PeftModel.Create(AutoModel.Load(dir), Lora(), "a");
        small.AddAdapter("b", Lora());
        large.eval();
        small.Base.eval();
        ILanguageModel a = new AdapterView(small, "a"), b = new AdapterView(small, "b"), untuned = new AdaptersOff(small);

        var rng = new Random(1);
        var prompts = Enumerable.Range(0, 4).Select(_ => Enumerable.Range(0, 16).Select(_ => rng.Next(10, 4000)).ToArray()).ToList();
        var options = new GenerationOptions { MaxNewTokens = newTokens };
        double tokens = prompts.Count * newTokens;
        Console.WriteLine($"tinycode-3m, {prompts.Count} prompts x 16 tokens, {newTokens} new tokens each, KV caches, {get_num_threads()} threads");
        (string Name, ILanguageModel Model)[] rows =
        [
            ("large model alone", large),
            ("one expert alone (adapter view)", a),
            ("proxy-tuning, 1 expert", LogitMix.ProxyTuning(large, a, untuned)),
            ("dynamic fusion, 1 expert", new DynamicLogitFusion(large, untuned, [a])),
            ("dynamic fusion, 2 experts (one)", new DynamicLogitFusion(large, untuned, [a, b])),
            ("dynamic fusion, 2 experts (joint)", new DynamicLogitFusion(large, untuned, [a, b], new FusionGrid(Search: FusionSearch.Joint))),
        ];
        foreach (var (name, model) in rows)
        {
            double s = Measure.Median(() => TextGenerator.Generate(model, prompts, options), runs);
            Console.WriteLine($"  {name,-34}: {tokens / s,8:F0} tokens/s ({s:F3} s)");
        }

        Console.WriteLine("weight search alone, one position, float64 (grid 0:2:0.1):");
        foreach (int vocab in new[] { 32_000, 151_936 })
            foreach (var (experts, search) in new[] { (1, FusionSearch.OneExpert), (2, FusionSearch.OneExpert), (2, FusionSearch.Joint) })
            {
                using var scope = NewDisposeScope();
                var logits = Enumerable.Range(0, 2 + experts).Select(_ => randn(1, vocab) * 4).ToArray();
                var grid = new FusionGrid(Search: search);
                double s = Measure.Median(() => FusionWeights.Solve(logits[0], logits[1], logits[2..], grid).Weights.Dispose(), runs);
                Console.WriteLine($"  V {vocab,7}, {experts} expert(s), {search,-9} ({grid.Candidates(experts).Count,3} weightings): {s * 1000,7:F1} ms per token");
            }
        return 0;
    }

    static LoraConfig Lora() => new() { R = 8, LoraAlpha = 16, TargetModules = ["all-linear"], InitLoraWeights = "false" };
}
