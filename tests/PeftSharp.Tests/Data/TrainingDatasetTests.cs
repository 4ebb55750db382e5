using PeftSharp.Data;

namespace PeftSharp.Tests.Data;

public class TrainingDatasetTests
{
    [Fact]
    public void Bad_record_stops_loading_naming_file_and_line()
    {
        using var dir = new TempDir();
        var path = dir.File("train.jsonl", "{\"text\": \"ok\"}\n{\"prompt\": \"no completion\"}\n");
        var e = Assert.Throws<DataFormatException>(() => TrainingDataset.Load(new DataOptions { TrainPath = path }, ToyTokenizer.Functions()));
        Assert.StartsWith($"{path}:2: has 'prompt' but no 'completion'", e.Message);
        Assert.Contains("--skip-bad-records", e.Message);
    }

    [Fact]
    public void Skip_bad_records_counts_and_skips_them()
    {
        using var dir = new TempDir();
        var path = dir.File("train.jsonl", string.Join("\n",
            "{\"text\": \"one\"}", "not json", "{\"text\": \"two\"}", "{\"text\": 3}", "{\"text\": \"three\"}"));
        var d = TrainingDataset.Load(new DataOptions { TrainPath = path, SkipBadRecords = true, EvalRatio = 0 }, ToyTokenizer.Functions());
        Assert.Equal(2, d.Report.BadRecords);
        Assert.Equal(3, d.Train.Count);
        Assert.Null(d.Eval);
        Assert.StartsWith($"{path}:2:", d.Report.BadExamples[0]);
        Assert.StartsWith($"{path}:4:", d.Report.BadExamples[1]);
    }

    [Fact]
    public void Eval_split_by_ratio_is_seeded_and_disjoint()
    {
        using var dir = new TempDir();
        var path = dir.File("train.jsonl", string.Join("\n", Enumerable.Range(0, 50).Select(i => $"{{\"text\": \"doc {i}\"}}")));
        DataOptions o = new() { TrainPath = path, EvalRatio = 0.2, Seed = 7 };
        var a = TrainingDataset.Load(o, ToyTokenizer.Functions());
        var b = TrainingDataset.Load(o, ToyTokenizer.Functions());
        var c = TrainingDataset.Load(o with { Seed = 8 }, ToyTokenizer.Functions());
        Assert.Equal(40, a.Train.Count);
        Assert.Equal(10, a.Eval!.Count);
        string Key(Row r) => string.Join(",", r.InputIds);
        Assert.Equal(a.Eval.Rows.Select(Key), b.Eval!.Rows.Select(Key));
        Assert.NotEqual(a.Eval.Rows.Select(Key), c.Eval!.Rows.Select(Key));
        Assert.Empty(a.Train.Rows.Select(Key).Intersect(a.Eval.Rows.Select(Key)));
    }

    [Fact]
    public void Separate_eval_file_and_packing()
    {
        using var dir = new TempDir();
        var train = dir.File("train.jsonl", string.Join("\n", Enumerable.Range(0, 10).Select(i => $"{{\"text\": \"d{i}\"}}")));
        var eval = dir.File("eval.csv", "text\nheld out\n");
        var d = TrainingDataset.Load(new DataOptions { TrainPath = train, EvalPath = eval, Packing = true, MaxLength = 12 }, ToyTokenizer.Functions());
        Assert.Equal(4, d.Train.Count);           // ten 4-token rows, three per 12-token row
        Assert.All(d.Train.Rows, r => Assert.NotNull(r.SegmentIds));
        Assert.Equal(1, d.Eval!.Count);
    }

    [Fact]
    public void Rows_with_nothing_to_train_on_are_dropped_and_counted()
    {
        using var dir = new TempDir();
        var path = dir.File("train.jsonl", "{\"prompt\": \"a very long prompt\", \"completion\": \"x\"}\n{\"prompt\": \"p\", \"completion\": \"c\"}\n");
        var d = TrainingDataset.Load(new DataOptions { TrainPath = path, EvalRatio = 0, MaxLength = 6 }, ToyTokenizer.Functions());
        Assert.Equal(1, d.Train.Count);
        Assert.Equal(1, d.Report.Empty);
        Assert.Equal(1, d.Report.Truncated);
    }

    [Fact]
    public void Classification_maps_label_names_in_sorted_order()
    {
        using var dir = new TempDir();
        var path = dir.File("train.csv", "text,label\ngreat,pos\nawful,neg\nfine,pos\n");
        var d = TrainingDataset.Load(new DataOptions { TrainPath = path, EvalRatio = 0, LabelField = "label" }, ToyTokenizer.Functions(specials: false));
        Assert.Equal(["neg", "pos"], d.Report.LabelNames);
        Assert.Equal([1L, 0L, 1L], d.Train.Rows.Select(r => r.ClassLabel!.Value));
        using var b = d.Train.MicroBatch([0, 1, 2], 0, 3);
        Assert.Null(b.Labels);
        Assert.Equal([1L, 0L, 1L], b.ClassLabels!.data<long>().ToArray());
    }

    [Fact]
    public void Epoch_order_depends_only_on_seed_and_epoch()
    {
        var src = new BatchSource(Enumerable.Range(0, 20).Select(i => new Row([i], [i])).ToList(), 0);
        Assert.Equal(Enumerable.Range(0, 20), src.EpochOrder(3, 1, shuffle: false));
        Assert.Equal(src.EpochOrder(2, 5, true), src.EpochOrder(2, 5, true));
        Assert.NotEqual(src.EpochOrder(2, 5, true), src.EpochOrder(3, 5, true));
        Assert.Equal(Enumerable.Range(0, 20), src.EpochOrder(2, 5, true).Order());
    }
}
