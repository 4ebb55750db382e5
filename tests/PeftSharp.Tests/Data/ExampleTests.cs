using PeftSharp.Data;

namespace PeftSharp.Tests.Data;

public class ExampleTests
{
    static RawRecord Rec(params (string Key, object? Value)[] fields) =>
        new(fields.ToDictionary(f => f.Key, f => f.Value), new SourceRef("x.jsonl", 7));

    [Fact]
    public void Shape_is_chosen_by_fields()
    {
        Assert.Equal(ExampleKind.Text, ExampleParser.Parse(Rec(("text", "t"))).Kind);
        Assert.Equal(ExampleKind.PromptCompletion, ExampleParser.Parse(Rec(("prompt", "p"), ("completion", "c"))).Kind);
        Assert.Equal(ExampleKind.InputIds, ExampleParser.Parse(Rec(("input_ids", new List<object?> { 1L, 2L }))).Kind);
        var chat = ExampleParser.Parse(Rec(("messages", new List<object?>
        {
            new Dictionary<string, object?> { ["role"] = "user", ["content"] = "hi" },
        })));
        Assert.Equal(ExampleKind.Messages, chat.Kind);
        Assert.Equal(ExampleKind.Text, ExampleParser.Parse(Rec(("body", "t")), textField: "body").Kind);
    }

    [Fact]
    public void Errors_name_the_record_and_the_problem()
    {
        var e = Assert.Throws<DataFormatException>(() => ExampleParser.Parse(Rec(("prompt", "p"))));
        Assert.Equal("x.jsonl:7: has 'prompt' but no 'completion'", e.Message);
        e = Assert.Throws<DataFormatException>(() => ExampleParser.Parse(Rec(("txt", "p"))));
        Assert.Contains("has fields ['txt']", e.Message);
        e = Assert.Throws<DataFormatException>(() => ExampleParser.Parse(Rec(("text", 5L))));
        Assert.Contains("'text' must be a string, not the number 5", e.Message);
        e = Assert.Throws<DataFormatException>(() => ExampleParser.Parse(Rec(("input_ids", new List<object?> { 1L, "x" }))));
        Assert.Contains("input_ids[1]", e.Message);
        e = Assert.Throws<DataFormatException>(() => ExampleParser.Parse(Rec(("text", "t")), labelField: "label"));
        Assert.Contains("no 'label' field", e.Message);
    }

    [Fact]
    public void Labels_may_be_indices_or_names()
    {
        Assert.Equal(3L, ExampleParser.Parse(Rec(("text", "t"), ("label", 3L)), labelField: "label").LabelId);
        Assert.Equal(1L, ExampleParser.Parse(Rec(("text", "t"), ("label", "1")), labelField: "label").LabelId);
        Assert.Equal("pos", ExampleParser.Parse(Rec(("text", "t"), ("label", "pos")), labelField: "label").LabelName);
    }

    [Fact]
    public void Text_is_trained_on_whole_with_bos_and_eos()
    {
        var row = ExampleTokenizer.Tokenize(ExampleParser.Parse(Rec(("text", "ab"))), ToyTokenizer.Functions(), 100);
        Assert.Equal([1, 'a' + 10, 'b' + 10, 2], row.InputIds);
        Assert.Equal(row.InputIds, row.Labels);
    }

    [Fact]
    public void Prompt_is_masked_and_completion_trained_by_default()
    {
        var e = ExampleParser.Parse(Rec(("prompt", "ab"), ("completion", "cd")));
        var row = ExampleTokenizer.Tokenize(e, ToyTokenizer.Functions(), 100);
        Assert.Equal([1, 'a' + 10, 'b' + 10, 'c' + 10, 'd' + 10, 2], row.InputIds);
        Assert.Equal([-100, -100, -100, 'c' + 10, 'd' + 10, 2], row.Labels);
        var all = ExampleTokenizer.Tokenize(e, ToyTokenizer.Functions(), 100, completionOnlyLoss: false);
        Assert.Equal(all.InputIds, all.Labels);
    }

    [Fact]
    public void Chat_trains_on_assistant_spans_only()
    {
        var e = new Example(ExampleKind.Messages, new SourceRef("c", 1))
        {
            Messages = [new("user", "q"), new("assistant", "a"), new("user", "r"), new("assistant", "b")],
        };
        var row = ExampleTokenizer.Tokenize(e, ToyTokenizer.Functions(ToyTokenizer.ChatMl), 1000);
        var text = ToyTokenizer.ChatMl(e.Messages).Text;
        Assert.Equal(ToyTokenizer.Encode(text), row.InputIds);
        var trained = new string(row.Labels.Where(l => l != -100).Select(l => (char)(l - 10)).ToArray());
        Assert.Equal("a</>b</>", trained);
    }

    [Fact]
    public void Chat_without_a_supported_template_is_a_clear_error()
    {
        var e = new Example(ExampleKind.Messages, new SourceRef("c.jsonl", 3)) { Messages = [new("user", "q")] };
        var ex = Assert.Throws<DataFormatException>(() => ExampleTokenizer.Tokenize(e, ToyTokenizer.Functions(), 100));
        Assert.Contains("c.jsonl:3", ex.Message);
        Assert.Contains("no chat template", ex.Message);
    }

    [Fact]
    public void Rows_are_truncated_to_max_length_keeping_the_start()
    {
        var row = ExampleTokenizer.Tokenize(ExampleParser.Parse(Rec(("text", "abcdef"))), ToyTokenizer.Functions(), 4);
        Assert.Equal([1, 'a' + 10, 'b' + 10, 'c' + 10], row.InputIds);
        Assert.Equal(4, row.Labels.Length);
    }

    [Fact]
    public void Pretokenised_rows_keep_given_labels()
    {
        var e = ExampleParser.Parse(Rec(("input_ids", new List<object?> { 5L, 6L, 7L }), ("labels", new List<object?> { -100L, 6L, 7L })));
        var row = ExampleTokenizer.Tokenize(e, ToyTokenizer.Functions(), 10);
        Assert.Equal([5, 6, 7], row.InputIds);
        Assert.Equal([-100, 6, 7], row.Labels);
    }
}
