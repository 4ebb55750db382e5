using PeftSharp.Data;

namespace PeftSharp.Tests.Data;

/// <summary>
/// Records that would otherwise reach libtorch or be silently altered: each is named by file:line, and
/// --skip-bad-records skips it and counts it.
/// </summary>
public class BadDataTests
{
    static DataOptions Options(string path, bool skip = false, int? vocab = null) =>
        new() { TrainPath = path, EvalRatio = 0, SkipBadRecords = skip, VocabSize = vocab };

    static string Bytes(TempDir dir, string name, params byte[][] lines)
    {
        var path = dir.Combine(name);
        File.WriteAllBytes(path, lines.SelectMany(l => l.Concat("\n"u8.ToArray())).ToArray());
        return path;
    }

    [Fact]
    public void Invalid_utf8_in_jsonl_is_refused_by_line_and_skippable()
    {
        using var dir = new TempDir();
        var path = Bytes(dir, "t.jsonl", """{"text": "good"}"""u8.ToArray(), [.. """{"text": "ba"""u8, 0xFF, 0xFE, .. "\"}"u8], """{"text": "also good"}"""u8.ToArray());

        var e = Assert.Throws<DataFormatException>(() => TrainingDataset.Load(Options(path), ToyTokenizer.Functions()));
        Assert.StartsWith($"{path}:2: is not valid UTF-8 (byte 0xFF", e.Message);
        Assert.Contains("--skip-bad-records", e.Message);

        var data = TrainingDataset.Load(Options(path, skip: true), ToyTokenizer.Functions());
        Assert.Equal(2, data.Report.TrainRows);
        Assert.Equal(1, data.Report.BadRecords);
        Assert.StartsWith($"{path}:2:", data.Report.BadExamples[0]);
    }

    [Fact]
    public void Invalid_utf8_in_a_csv_field_is_refused_by_line_and_skippable()
    {
        using var dir = new TempDir();
        var path = Bytes(dir, "t.csv", "text,label"u8.ToArray(), "fine,a"u8.ToArray(), [.. "\"multi\nline "u8, 0xC3, .. "\",b"u8], "ok,c"u8.ToArray());

        var records = DataReader.Read(path).ToList();
        Assert.Equal(["fine", null, "ok"], records.Select(r => r.Fields?["text"] as string));
        Assert.Equal(3, records[1].Source.Line);                        // the record starts on line 3
        Assert.Equal(5, records[2].Source.Line);                        // and spans two lines
        Assert.Contains("column 'text' is not valid UTF-8", records[1].Error);

        var data = TrainingDataset.Load(Options(path, skip: true), ToyTokenizer.Functions());
        Assert.Equal(2, data.Report.TrainRows);
        Assert.StartsWith($"{path}:3:", data.Report.BadExamples[0]);
    }

    [Fact]
    public void Valid_multibyte_text_and_a_bom_still_read_exactly()
    {
        using var dir = new TempDir();
        var jsonl = Bytes(dir, "t.jsonl", [0xEF, 0xBB, 0xBF, .. """{"text": "héllo → 世界"}"""u8]);
        var csv = Bytes(dir, "t.csv", [0xEF, 0xBB, 0xBF, .. "text\r"u8], "\"héllo, → 世界\"\r"u8.ToArray());
        Assert.Equal("héllo → 世界", DataReader.Read(jsonl).Single().Fields!["text"]);
        Assert.Equal("héllo, → 世界", DataReader.Read(csv).Single().Fields!["text"]);
    }

    [Fact]
    public void A_lone_surrogate_escape_is_a_bad_record_with_its_line()
    {
        using var dir = new TempDir();
        var jsonl = dir.File("t.jsonl", "{\"text\": \"fine\"}\n{\"text\": \"x\\ud800y\"}\n");
        var array = dir.File("t.json", "[\n{\"text\": \"fine\"},\n{\"text\": \"x\\ud800y\"}\n]");
        var csv = dir.File("c.csv", "messages\n\"[{\"\"role\"\": \"\"user\"\", \"\"content\"\": \"\"\\ud800\"\"}]\"\n");

        foreach (var (path, line) in new[] { (jsonl, 2), (array, 3) })
        {
            var e = Assert.Throws<DataFormatException>(() => TrainingDataset.Load(Options(path), ToyTokenizer.Functions()));
            Assert.StartsWith($"{path}:{line}: holds a string that is not valid Unicode", e.Message);
            Assert.Equal(1, TrainingDataset.Load(Options(path, skip: true), ToyTokenizer.Functions()).Report.BadRecords);
        }
        var cell = Assert.Throws<DataFormatException>(() => ExampleParser.Parse(DataReader.Read(csv).Single()));
        Assert.StartsWith($"{csv}:2: 'messages' holds a string that is not valid Unicode", cell.Message);
    }

    [Fact]
    public void Token_ids_outside_the_vocabulary_are_named_and_skippable()
    {
        using var dir = new TempDir();
        var path = dir.File("ids.jsonl", string.Join('\n',
            """{"input_ids": [5, 6, 7]}""",
            """{"input_ids": [5, 600, 7]}""",
            """{"input_ids": [5, -1, 7]}""",
            """{"input_ids": [5, 6, 7], "labels": [-100, 6, 100]}""",
            """{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}""",
            """{"input_ids": [[5, 6], [7, 8]]}""",
            """{"input_ids": [5, 6""") + "\n");

        var e = Assert.Throws<DataFormatException>(() => TrainingDataset.Load(Options(path, vocab: 100), ToyTokenizer.Functions()));
        Assert.StartsWith($"{path}:2: input_ids[1] = 600 is outside the model's vocabulary (0..99)", e.Message);

        var data = TrainingDataset.Load(Options(path, skip: true, vocab: 100), ToyTokenizer.Functions());
        Assert.Equal(2, data.Report.TrainRows);
        Assert.Equal(5, data.Report.BadRecords);
        Assert.Equal([2, 3, 4, 6, 7], data.Report.BadExamples.Select(m => int.Parse(m[(path.Length + 1)..m.IndexOf(": ", path.Length, StringComparison.Ordinal)])));
        Assert.Contains("labels[2] = 100 is neither -100", data.Report.BadExamples[2]);
        Assert.Contains("input_ids[0] is a list, not a token id", data.Report.BadExamples[3]);
        Assert.Contains("not valid JSON", data.Report.BadExamples[4]);
    }

    [Fact]
    public void Without_a_tokenizer_token_ids_load_and_text_records_are_named()
    {
        using var dir = new TempDir();
        var path = dir.File("mixed.jsonl", "{\"input_ids\": [3, 4, 5]}\n{\"text\": \"needs a tokenizer\"}\n");
        var none = TokenizerFunctions.None(padId: 0, "model-x has no tokenizer.json");

        var e = Assert.Throws<DataFormatException>(() => TrainingDataset.Load(Options(path), none));
        Assert.StartsWith($"{path}:2: is a text record, which needs a tokenizer, but model-x has no tokenizer.json", e.Message);
        var data = TrainingDataset.Load(Options(path, skip: true), none);
        Assert.Equal([3, 4, 5], data.Train.Rows.Single().InputIds);
    }
}
