using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using PeftSharp.Tokenization;

namespace PeftSharp.Tests.Tokenization;

/// <summary>The tokenizer of the shipped tinycode-3m model, against the ids in its report and probe inputs.</summary>
public class TinycodeTokenizerTests
{
    static readonly string folder = Repo.Path("models", "tinycode-3m");

    static HfTokenizer Load() => HfTokenizer.Load(folder);

    static (int[] Ids, string Text) Greedy48()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(folder, "report.json")));
        var report = doc.RootElement;
        return ([.. report.GetProperty("greedy_48_ids").EnumerateArray().Select(i => i.GetInt32())],
            report.GetProperty("greedy_48_text").GetString()!);
    }

    [Fact]
    public void Greedy_ids_decode_to_the_reported_text()
    {
        var (ids, text) = Greedy48();

        Assert.Equal(text, Load().Decode(ids));
    }

    [Fact]
    public void Greedy_text_round_trips_through_encode()
    {
        var tokenizer = Load();
        var (ids, text) = Greedy48();

        var encoded = tokenizer.Encode(text);

        Assert.Equal(text, tokenizer.Decode(encoded));
        // The model emitted the canonical tokenization, so encoding gives back its very ids.
        Assert.Equal(ids, encoded);
    }

    [Fact]
    public void Endoftext_in_text_is_id_0()
    {
        var tokenizer = Load();

        var ids = tokenizer.Encode("x = 1<|endoftext|>def f():");

        Assert.Equal(0, tokenizer.BosId);
        Assert.Equal(0, tokenizer.EosId);
        Assert.Equal(1, tokenizer.PadId);
        Assert.Equal(4096, tokenizer.VocabSize);
        Assert.Equal([.. tokenizer.Encode("x = 1"), 0, .. tokenizer.Encode("def f():")], ids);
        Assert.Equal("x = 1def f():", tokenizer.Decode(ids, skipSpecialTokens: true));
    }

    [Fact]
    public void Add_bos_token_in_the_config_replaces_the_post_processor()
    {
        // transformers 5 rebuilds the template as "[bos] $A [eos]" when tokenizer_config sets add_bos/eos_token.
        var json = File.ReadAllText(Path.Combine(folder, "tokenizer.json"));
        var tokenizer = HfTokenizer.FromJson(json, """{"bos_token": "<|endoftext|>", "eos_token": "<|pad|>", "add_bos_token": true}""");

        Assert.Equal([0, .. Load().Encode("x = 1")], tokenizer.Encode("x = 1"));
        Assert.Equal(Load().Encode("x = 1"), tokenizer.Encode("x = 1", addSpecialTokens: false));
    }

    [Fact]
    public void A_lone_surrogate_encodes_as_the_replacement_char()
    {
        var tokenizer = Load();

        // .NET strings can hold invalid UTF-16; its UTF-8 is EF BF BD, which decodes to U+FFFD.
        Assert.Equal("a\uFFFDb", tokenizer.Decode(tokenizer.Encode("a\uD800b")));
    }

    /// <summary>
    /// The probe rows are 256-token windows of real Python tokenized by HF (2,048 ids in all). Decoding a row and
    /// encoding it again gives the row back: a strong check of merges and pre-tokenization on real code.
    /// (A window cut in mid-word could legitimately re-encode differently; none of these is.)
    /// </summary>
    [Fact]
    public void Probe_rows_round_trip()
    {
        var tokenizer = Load();
        foreach (var row in ProbeRows())
        {
            var text = tokenizer.Decode(row);
            var encoded = tokenizer.Encode(text);

            Assert.Equal(text, tokenizer.Decode(encoded));
            Assert.Equal(row, encoded);
        }
    }

    static IEnumerable<int[]> ProbeRows()
    {
        var bytes = File.ReadAllBytes(Path.Combine(folder, "probe_inputs.safetensors"));
        var headerLength = (int)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        using var header = JsonDocument.Parse(Encoding.UTF8.GetString(bytes, 8, headerLength));
        var tensor = header.RootElement.GetProperty("input_ids");
        Assert.Equal("I64", tensor.GetProperty("dtype").GetString());
        var shape = tensor.GetProperty("shape").EnumerateArray().Select(d => d.GetInt32()).ToArray();
        var data = bytes.AsMemory(8 + headerLength + tensor.GetProperty("data_offsets")[0].GetInt32());
        for (int r = 0; r < shape[0]; r++)
        {
            yield return [.. Enumerable.Range(0, shape[1])
                .Select(c => checked((int)BinaryPrimitives.ReadInt64LittleEndian(data.Span[((r * shape[1] + c) * 8)..])))];
        }
    }
}
