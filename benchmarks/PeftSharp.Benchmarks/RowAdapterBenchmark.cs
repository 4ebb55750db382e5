using PeftSharp.Generation;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Benchmarks;

/// <summary>
/// <c>row-adapters</c>: cached greedy generation of 16 prompts over 4 LoRA adapters (ranks 4, 8, 16, 32 on all
/// linear layers of tinycode-3m), as one mixed batch of 16 rows against 4 batches of 4 rows, one per adapter.
/// Options: <c>--new-tokens N</c> (default 32), <c>--runs N</c> (default 3), <c>--forward</c> (one [16,16] forward instead).
/// </summary>
internal static class RowAdapterBenchmark
{
    public static int Run(string[] args)
    {
        int newTokens = Measure.Arg(args, "--new-tokens", 32), runs = Measure.Arg(args, "--runs", 3);
        manual_seed(0);
        var model = AutoModel.Load(Measure.ModelDir("tinycode-3m"));
        model.eval();
        string[] names = ["r4", "r8", "r16", "r32"];
        var pm = PeftModel.Create(model, Lora(4), names[0]);
        foreach (var (name, r) in names.Zip(new[] { 4, 8, 16, 32 }).Skip(1)) pm.AddAdapter(name, Lora(r));

        var rng = new Random(1);
        var prompts = Enumerable.Range(0, 16).Select(_ => Enumerable.Range(0, 16).Select(_ => rng.Next(10, 4000)).ToArray()).ToList();
        var rows = prompts.Select((_, i) => (string?)names[i % 4]).ToList();
        var options = new GenerationOptions { MaxNewTokens = newTokens };
        double tokens = 16.0 * newTokens;

        if (args.Contains("--forward"))
        {
            using var ids = tensor(prompts.SelectMany(p => p.Select(x => (long)x)).ToArray()).view(16, 16);
            using var ng = no_grad();
            pm.SetAdapter("r32");
            double one = Measure.Median(() => pm.Forward(ModelInputs.Ids(ids)).Dispose(), 10);
            double mix = Measure.Median(() => pm.Forward(ModelInputs.Ids(ids), rows).Dispose(), 10);
            Console.WriteLine($"forward [16,16]: r32 on all rows {one * 1000:F1} ms, mixed {mix * 1000:F1} ms");
            return 0;
        }
        double separate = Measure.Median(() =>
        {
            foreach (var name in names)
            {
                pm.SetAdapter(name);
                TextGenerator.Generate(pm, prompts.Where((_, i) => rows[i] == name).ToList(), options);
            }
        }, runs);
        double mixed = Measure.Median(() =>
        {
            using var _ = pm.RowAdapters(rows);
            TextGenerator.Generate(pm, prompts, options);
        }, runs);
        pm.SetAdapter("r32");
        double single = Measure.Median(() => TextGenerator.Generate(pm, prompts, options), runs);
        Console.WriteLine($"tinycode-3m, 16 prompts x 16 tokens, {newTokens} new tokens each, 4 LoRA adapters (r 4/8/16/32, all-linear), KV cache, {get_num_threads()} threads");
        Console.WriteLine($"  one mixed batch of 16 rows : {tokens / mixed,8:F0} tokens/s ({mixed:F3} s)");
        Console.WriteLine($"  4 batches of 4 rows        : {tokens / separate,8:F0} tokens/s ({separate:F3} s)");
        Console.WriteLine($"  16 rows, one adapter (r32) : {tokens / single,8:F0} tokens/s ({single:F3} s), the ceiling");
        Console.WriteLine($"  speed-up                   : {separate / mixed:F2}x");
        return 0;
    }

    static LoraConfig Lora(int r) => new() { R = r, LoraAlpha = r, TargetModules = ["all-linear"], InitLoraWeights = "false" };
}
