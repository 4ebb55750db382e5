using Parquet.Serialization;
using PeftSharp.Data;

namespace PeftSharp.Tests.Data;

public class ReaderTests
{
    [Fact]
    public void Jsonl_reads_objects_skips_blank_lines_and_names_the_bad_line()
    {
        using var dir = new TempDir();
        var path = dir.File("d.jsonl", "{\"text\": \"a\"}\n\n{\"text\": \"b\", \"n\": 3}\n{\"text\": oops}\n[1,2]\n");
        var records = DataReader.Read(path).ToList();
        Assert.Equal(4, records.Count);
        Assert.Equal("a", records[0].Fields!["text"]);
        Assert.Equal(3L, records[1].Fields!["n"]);
        Assert.Equal(new SourceRef(path, 3), records[1].Source);
        Assert.Null(records[2].Fields);
        Assert.Equal(4, records[2].Source.Line);
        Assert.Contains("not valid JSON", records[2].Error);
        Assert.Contains("expected a JSON object", records[3].Error);
        var e = Assert.Throws<DataFormatException>(() => ExampleParser.Parse(records[2]));
        Assert.StartsWith($"{path}:4: not valid JSON", e.Message);
    }

    [Fact]
    public void Json_array_names_each_record_by_its_starting_line()
    {
        using var dir = new TempDir();
        var path = dir.File("d.json", "[\n  {\"text\": \"a\"},\n  {\n    \"prompt\": \"p\",\n    \"completion\": \"c\"\n  },\n  42\n]\n");
        var records = DataReader.Read(path).ToList();
        Assert.Equal([2L, 3L, 7L], records.Select(r => r.Source.Line));
        Assert.Equal("c", records[1].Fields!["completion"]);
        Assert.NotNull(records[2].Error);
    }

    [Fact]
    public void Json_syntax_error_stops_the_file_with_its_line()
    {
        using var dir = new TempDir();
        var path = dir.File("d.json", "[\n {\"text\": \"a\"},\n {\"text\": \"b\"\n]\n");
        var e = Assert.Throws<DataFormatException>(() => DataReader.Read(path).ToList());
        Assert.Equal(4, e.Where.Line);
        Assert.Contains("d.json:4", e.Message);
    }

    [Fact]
    public void Json_file_holding_lines_is_read_as_jsonl()
    {
        using var dir = new TempDir();
        var path = dir.File("d.json", "{\"text\": \"a\"}\n{\"text\": \"b\"}\n");
        Assert.Equal(["a", "b"], DataReader.Read(path).Select(r => (string)r.Fields!["text"]!));
    }

    [Fact]
    public void Csv_follows_rfc4180_quoting_and_tracks_lines()
    {
        using var dir = new TempDir();
        var csv = "prompt,completion\r\n" +
                  "plain,\"with, comma\"\r\n" +
                  "\"two\nlines\",\"a \"\"quote\"\"\"\r\n" +
                  "only one field\r\n" +
                  ",\r\n";
        var path = dir.File("d.csv", csv);
        var records = DataReader.Read(path).ToList();
        Assert.Equal(4, records.Count);
        Assert.Equal("with, comma", records[0].Fields!["completion"]);
        Assert.Equal(2, records[0].Source.Line);
        Assert.Equal("two\nlines", records[1].Fields!["prompt"]);
        Assert.Equal("a \"quote\"", records[1].Fields!["completion"]);
        Assert.Equal(3, records[1].Source.Line);
        Assert.Equal(5, records[2].Source.Line);
        Assert.Contains("has 1 fields but the header has 2", records[2].Error);
        Assert.Equal("", records[3].Fields!["prompt"]);
    }

    [Fact]
    public void Csv_unclosed_quote_names_the_line_it_opened_on()
    {
        using var dir = new TempDir();
        var path = dir.File("d.csv", "text\nfine\n\"never closed\nmore\n");
        var e = Assert.Throws<DataFormatException>(() => DataReader.Read(path).ToList());
        Assert.Equal(3, e.Where.Line);
    }

    [Fact]
    public void Csv_cells_may_hold_token_ids_and_messages_as_text()
    {
        using var dir = new TempDir();
        var path = dir.File("d.csv", "input_ids\n\"[1, 2, 3]\"\n4 5 6\n");
        var examples = DataReader.Read(path).Select(r => ExampleParser.Parse(r)).ToList();
        Assert.Equal([1, 2, 3], examples[0].InputIds!);
        Assert.Equal([4, 5, 6], examples[1].InputIds!);

        var chat = dir.File("c.csv", "messages\n\"[{\"\"role\"\": \"\"user\"\", \"\"content\"\": \"\"hi\"\"}]\"\n");
        var m = ExampleParser.Parse(DataReader.Read(chat).Single());
        Assert.Equal(new ChatMessage("user", "hi"), m.Messages!.Single());
    }

    public sealed class TextRow
    {
        public string? Text { get; set; }
        public long Label { get; set; }
    }

    public sealed class IdsRow
    {
        public List<long> InputIds { get; set; } = [];
    }

    [Fact]
    public async Task Parquet_reads_strings_numbers_and_lists()
    {
        using var dir = new TempDir();
        var text = dir.Combine("t.parquet");
        await ParquetSerializer.SerializeAsync(new[] { new TextRow { Text = "first", Label = 2 }, new TextRow { Text = "second", Label = 0 } }, text);
        var records = DataReader.Read(text).ToList();
        Assert.Equal(2, records.Count);
        var keys = records[0].Fields!.Keys.ToList();
        Assert.Equal("first", records[0].Fields![keys.Single(k => k.Equals("Text", StringComparison.OrdinalIgnoreCase))]);
        Assert.Equal("t.parquet row 2", $"{Path.GetFileName(records[1].Source.File)} {records[1].Source.Unit} {records[1].Source.Line}");

        var ids = dir.Combine("i.parquet");
        await ParquetSerializer.SerializeAsync(new[] { new IdsRow { InputIds = [5, 6, 7] } }, ids);
        var row = DataReader.Read(ids).Single();
        var list = Assert.IsAssignableFrom<IReadOnlyList<object?>>(row.Fields!.Values.Single());
        Assert.Equal([5L, 6L, 7L], list);
    }

    [Fact]
    public async Task Parquet_with_hf_column_names_parses_into_examples()
    {
        using var dir = new TempDir();
        var path = dir.Combine("hf.parquet");
        var schema = new Parquet.Schema.ParquetSchema(
            new Parquet.Schema.DataField<string>("text"), new Parquet.Schema.DataField<long>("label"));
        var rows = new List<IDictionary<string, object?>>
        {
            new Dictionary<string, object?> { ["text"] = "good", ["label"] = 1L },
            new Dictionary<string, object?> { ["text"] = "bad", ["label"] = 0L },
        };
        await using (var fs = File.Create(path))
            await ParquetSerializer.SerializeUntypedAsync(rows, schema, fs);
        var examples = DataReader.Read(path).Select(r => ExampleParser.Parse(r, labelField: "label")).ToList();
        Assert.Equal(["good", "bad"], examples.Select(e => e.Text));
        Assert.Equal([1L, 0L], examples.Select(e => e.LabelId!.Value));
    }

    [Fact]
    public void Text_folder_gives_one_record_per_file_in_name_order_skipping_hidden()
    {
        using var dir = new TempDir();
        dir.File("b.sh", "echo b\n");
        dir.File("a/z.js", "let z;\n");
        dir.File(".hidden", "no");
        File.WriteAllBytes(dir.Combine("c.bin"), [1, 0, 2]);
        var records = DataReader.Read(dir.Path).ToList();
        Assert.Equal(["a/z.js", "b.sh", "c.bin"], records.Select(r => Path.GetRelativePath(dir.Path, r.Source.File)));
        Assert.Equal("let z;\n", records[0].Fields!["text"]);
        Assert.Contains("binary", records[2].Error);
        Assert.Equal(dir.Combine("b.sh"), records[1].Source.ToString());
    }
}
