using System.IO.Compression;
using System.Text;
using PeftSharp.Tokenization;

namespace PeftSharp.Benchmarks;

/// <summary>
/// Encode throughput of each tokenizer family on a megabyte of mixed text (prose, code, CJK, emoji), warm cache:
/// <c>dotnet run -c Release --project benchmarks/PeftSharp.Benchmarks -- tokenize</c>.
/// </summary>
internal static class TokenizeBenchmark
{
    public static int Run(string[] args)
    {
        var tinycode = Measure.ModelDir("tinycode-3m");
        var fixtures = Path.GetFullPath(Path.Combine(tinycode, "..", "..", "tests", "fixtures", "tokenizers"));
        var text = MixedText(1_000_000, seed: 3);
        Report("tinycode-3m (byte-level BPE)", HfTokenizer.Load(tinycode), text);
        Report("deepseek-v3 (byte-level BPE)", FromGzip(fixtures, "deepseek-v3.json.gz"), text);
        Report("llama2 (SentencePiece BPE)", FromGzip(fixtures, "llama2.json.gz"), text);
        Report("unigram (T5-style, Precompiled)", FromGzip(fixtures, "unigram.json.gz"), text);
        return 0;
    }

    static void Report(string name, HfTokenizer tokenizer, string text)
    {
        var ids = tokenizer.Encode(text);
        var seconds = Measure.Median(() => tokenizer.Encode(text), runs: 3, warmup: 0);
        Console.WriteLine($"{name,-34} {ids.Length,8} tokens  {text.Length / seconds / 1e6,6:F2} M chars/s");
    }

    static HfTokenizer FromGzip(string folder, string name)
    {
        using var gzip = new GZipStream(File.OpenRead(Path.Combine(folder, name)), CompressionMode.Decompress);
        using var reader = new StreamReader(gzip);
        return HfTokenizer.FromJson(reader.ReadToEnd(), source: name);
    }

    static string MixedText(int length, int seed)
    {
        var rng = new Random(seed);
        string[] pool =
        [
            "the", "model", "adapter", "weights", "training", "is", "of", "and", "a", "layer", "rank", "Hello,", "world.",
            "déjà", "vu", "naïve", "你好", "世界", "日本語", "😀", "🚀", "x**2", "return", "self.lora_A", "(x)", "{", "}", "1234", "3.14",
        ];
        var sb = new StringBuilder(length + 64);
        while (sb.Length < length)
        {
            sb.Append(pool[rng.Next(pool.Length)]);
            sb.Append(rng.Next(12) switch { 0 => "\n", 1 => "  ", _ => " " });
        }
        return sb.ToString(0, length);
    }
}
