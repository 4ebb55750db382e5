using System.Diagnostics;
using System.Text;
using PeftSharp.Tokenization;
using Xunit.Abstractions;

namespace PeftSharp.Tests.Tokenization;

/// <summary>
/// Encoding speed on a megabyte of code. Measured as process CPU time, in a collection that runs alone, so that
/// other processes on a shared box do not count; a 2-core CI box needs ~0.4 s cold and ~0.25 s warm.
/// </summary>
[Collection(nameof(TokenizerPerformanceTests))]
public class TokenizerPerformanceTests(ITestOutputHelper output)
{
    [Fact]
    [Trait("Category", "Performance")]
    public void Encodes_a_megabyte_of_code_in_well_under_a_second()
    {
        var text = SyntheticPython(1_000_000, seed: 7);
        var tokenizer = HfTokenizer.Load(Repo.Path("models", "tinycode-3m"));
        tokenizer.Encode(SyntheticPython(5_000, seed: 8)); // JIT the code paths, barely touch the cache

        var ids = Array.Empty<int>();
        var cold = CpuTime(() => ids = tokenizer.Encode(text));
        var warm = Enumerable.Range(0, 3).Min(_ => CpuTime(() => tokenizer.Encode(text)));

        output.WriteLine($"1 MB, {ids.Length} tokens: {cold.TotalSeconds:F2} s CPU cold, {warm.TotalSeconds:F2} s warm");
        Assert.True(ids.Length > 200_000, $"only {ids.Length} tokens");
        Assert.True(cold < TimeSpan.FromSeconds(1.5), $"first encode of 1 MB took {cold.TotalSeconds:F2} s of CPU");
        Assert.True(warm < TimeSpan.FromSeconds(1), $"encoding 1 MB with a warm cache took {warm.TotalSeconds:F2} s of CPU");
        Assert.Equal(text, tokenizer.Decode(ids));
    }

    static TimeSpan CpuTime(Action action)
    {
        using var process = Process.GetCurrentProcess();
        var before = process.TotalProcessorTime;
        action();
        process.Refresh();
        return process.TotalProcessorTime - before;
    }

    /// <summary>Python-looking text over a pool of 3,000 identifiers (real code repeats its names too).</summary>
    static string SyntheticPython(int length, int seed)
    {
        var rng = new Random(seed);
        var names = Enumerable.Range(0, 3000)
            .Select(_ => string.Concat(Enumerable.Range(0, rng.Next(2, 12)).Select(_ => (char)('a' + rng.Next(26)))) + (rng.Next(4) == 0 ? "_id" : ""))
            .ToArray();
        string Name() => names[rng.Next(names.Length)];
        var sb = new StringBuilder(length + 200);
        while (sb.Length < length)
        {
            sb.Append($"def {Name()}({Name()}, {Name()}=None):\n");
            sb.Append($"    \"\"\"Return the {Name()} of {Name()} ({rng.Next(1000)} items).\"\"\"\n");
            sb.Append($"    {Name()} = self.{Name()}({Name()}, {rng.Next(100)}) * {rng.NextDouble():F3}  # {Name()} {Name()}\n");
            sb.Append($"    if {Name()} >= {rng.Next(10)}:\n        return [{Name()}, '{Name()}', {{'{Name()}': {Name()}}}]\n\n");
        }
        return sb.ToString(0, length);
    }
}

[CollectionDefinition(nameof(TokenizerPerformanceTests), DisableParallelization = true)]
public class TokenizerPerformanceCollection;
