using PeftSharp.Data;
using PeftSharp.Training;

namespace PeftSharp.Tests.Training;

/// <summary>The recipe's data checks: bad token ids stop it before anything is written, or are skipped and reported.</summary>
[Collection(SerialRng.Name)]
public class FineTuneDataTests
{
    [Fact]
    public void Out_of_vocabulary_ids_stop_the_run_before_any_file_is_written_or_are_skipped_and_reported()
    {
        using var dir = new TempDir();
        var data = dir.File("ids.jsonl", "{\"input_ids\": [5, 6, 7, 8]}\n{\"input_ids\": [5, 4096, 7]}\n{\"input_ids\": [9, 10, 11, 12]}\n");
        var output = dir.Combine("out");
        var options = new TrainingOptions
        {
            Model = Repo.Path("models", "tinycode-3m"), TrainFile = data, EvalRatio = 0, OutputDir = output, MaxSteps = 1,
            PerDeviceTrainBatchSize = 2, SampleMaxNewTokens = 1, SamplePrompt = "x",
        };

        var e = Assert.Throws<DataFormatException>(() => FineTune.Run(options, "", "", new TrainerHooks { HandleCtrlC = false }));
        Assert.Equal($"{data}:2: input_ids[1] = 4096 is outside the model's vocabulary (0..4095) (--skip-bad-records skips such records)", e.Message);
        Assert.False(Directory.Exists(output));

        var log = new List<string>();
        var report = FineTune.Run(options with { SkipBadRecords = true }, "", "", new TrainerHooks { HandleCtrlC = false }, log.Add);
        Assert.Equal(StopReason.Completed, report.Result.Reason);
        Assert.Equal(2, report.Data.TrainRows);
        Assert.Contains(log, l => l.StartsWith($"skipped 1 bad record(s) (--skip-bad-records), the first: {data}:2: input_ids[1]", StringComparison.Ordinal));
    }

    [Fact]
    public void The_default_sample_prompt_is_a_short_start_of_a_huge_first_record()
    {
        using var dir = new TempDir();
        var words = string.Join(' ', Enumerable.Range(0, 20_000).Select(i => $"w{i}"));   // one line of ~100 KB
        var data = dir.File("t.jsonl", $"{{\"text\": \"{words}\"}}\n{{\"text\": \"short\"}}\n");
        var prompt = FineTune.DefaultPrompt(data);
        Assert.InRange(prompt.Length, FineTune.MaxDefaultPromptChars / 2, FineTune.MaxDefaultPromptChars);
        Assert.StartsWith("w0 w1 w2", prompt);
        Assert.Equal(words[..prompt.Length], prompt);                      // a prefix
        Assert.Equal(' ', words[prompt.Length]);                           // cut at a word boundary

        var lines = dir.File("l.jsonl", "{\"text\": \"a\\nb\\nc\\nd\"}\n");
        Assert.Equal("a\nb\nc\n", FineTune.DefaultPrompt(lines));           // short records keep their first three lines
    }
}
