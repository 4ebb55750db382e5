using PeftSharp.Data;
using PeftSharp.Tests.Data;

namespace PeftSharp.Tests.Mixtures;

/// <summary>Records may carry a <c>task_id</c>; it travels to the batch as <c>TaskIds</c>, the way PEFT's Poly takes <c>task_ids</c>.</summary>
public class TaskIdDataTests
{
    [Fact]
    public void Task_ids_reach_the_batch_in_row_order()
    {
        using var dir = new TempDir();
        var path = dir.File("train.jsonl", "{\"text\": \"ab\", \"task_id\": 2}\n{\"prompt\": \"p\", \"completion\": \"c\", \"task_id\": \"0\"}\n{\"input_ids\": [5, 6, 7], \"task_id\": 1.0}\n");
        var d = TrainingDataset.Load(new DataOptions { TrainPath = path, EvalRatio = 0 }, ToyTokenizer.Functions());
        Assert.Equal([2L, 0L, 1L], d.Train.Rows.Select(r => r.TaskId!.Value));
        using var batch = d.Train.MicroBatch([2, 0, 1], 0, 3);
        Assert.Equal([1L, 2L, 0L], batch.TaskIds!.data<long>().ToArray());
    }

    [Fact]
    public void Data_without_task_ids_gives_batches_without_them()
    {
        using var dir = new TempDir();
        var path = dir.File("train.jsonl", "{\"text\": \"ab\"}\n{\"text\": \"cd\"}\n");
        var d = TrainingDataset.Load(new DataOptions { TrainPath = path, EvalRatio = 0 }, ToyTokenizer.Functions());
        using var batch = d.Train.MicroBatch([0, 1], 0, 2);
        Assert.Null(batch.TaskIds);
    }

    [Theory]
    [InlineData("-1")]
    [InlineData("1.5")]
    [InlineData("\"x\"")]
    [InlineData("[1]")]
    public void A_task_id_that_is_not_a_non_negative_integer_is_named(string value)
    {
        using var dir = new TempDir();
        var path = dir.File("train.jsonl", $"{{\"text\": \"ab\", \"task_id\": 0}}\n{{\"text\": \"ab\", \"task_id\": {value}}}\n");
        var e = Assert.Throws<DataFormatException>(() => TrainingDataset.Load(new DataOptions { TrainPath = path, EvalRatio = 0 }, ToyTokenizer.Functions()));
        Assert.StartsWith($"{path}:2: 'task_id' must be a non-negative integer", e.Message);
    }

    [Fact]
    public void A_file_that_names_some_tasks_but_not_all_is_refused_at_the_first_unnamed_record()
    {
        using var dir = new TempDir();
        var path = dir.File("train.jsonl", "{\"text\": \"ab\", \"task_id\": 0}\n{\"text\": \"cd\", \"task_id\": 1}\n{\"text\": \"ef\"}\n");
        var e = Assert.Throws<DataFormatException>(() => TrainingDataset.Load(new DataOptions { TrainPath = path, EvalRatio = 0 }, ToyTokenizer.Functions()));
        Assert.StartsWith($"{path}:3: has no 'task_id' but {path}:1 has one", e.Message);
    }

    [Fact]
    public void Records_with_task_ids_are_not_packed()
    {
        using var dir = new TempDir();
        var path = dir.File("train.jsonl", "{\"text\": \"ab\", \"task_id\": 0}\n{\"text\": \"cd\", \"task_id\": 1}\n");
        var e = Assert.Throws<InvalidOperationException>(() => TrainingDataset.Load(new DataOptions { TrainPath = path, EvalRatio = 0, Packing = true }, ToyTokenizer.Functions()));
        Assert.Contains("task_id", e.Message);
    }
}
