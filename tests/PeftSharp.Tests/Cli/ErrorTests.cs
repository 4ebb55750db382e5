using PeftSharp.Cli;
using PeftSharp.Tests.Merging;
using static PeftSharp.Tests.Cli.CliRun;

namespace PeftSharp.Tests.Cli;

/// <summary>Every command fails the same way: one "error:" line on stderr naming the file or option, exit code 1, no stack trace.</summary>
public class ErrorTests
{
    [Fact]
    public void An_unknown_option_is_one_error_line_naming_it()
    {
        Run("generate", "--no-such-option", "3").AssertError("--no-such-option", "peftsharp generate --help");
        Run("no-such-command").AssertError("no-such-command");
        Run().AssertError("no command given", "merge-models");
    }

    [Fact]
    public void Inspect_writes_its_table_to_the_output_it_is_given()
    {
        var r = Run("inspect", TinyCode);
        Assert.True(r.Code == 0, r.Err);
        Assert.Contains("LlamaForCausalLM", r.Out);
        Assert.Contains("tokenizer", r.Out);
        Assert.Equal("", r.Err);
    }

    [Fact]
    public void A_missing_required_option_is_named()
    {
        Run("logits", "--inputs", "in.safetensors", "--out", "out.safetensors").AssertError("--model");
    }

    [Fact]
    public void A_missing_file_is_named()
    {
        Run("merge-models", "--config", Path.Combine(Nowhere, "merge.yaml"), "--out", Path.Combine(Nowhere, "out")).AssertError("merge.yaml");
        Run("inspect", Nowhere).AssertError(Nowhere);
    }

    static string MergeInputs()
    {
        var dir = TestDirs.New();
        TinyModels.Write(dir, "base", 1);
        TinyModels.Write(dir, "a", 2);
        File.WriteAllText(Path.Combine(dir, "merge.yaml"), "merge_method: task_arithmetic\nbase_model: base\nparameters: {weight: 0.5}\nmodels: [a]\n");
        return dir;
    }

    [Fact]
    public void Merge_models_into_an_existing_file_or_under_one_is_an_error_naming_it_and_leaves_the_file_alone()
    {
        var dir = MergeInputs();
        var file = Path.Combine(dir, "taken");
        File.WriteAllText(file, "keep me");
        Run("merge-models", "--config", Path.Combine(dir, "merge.yaml"), "--out", file, "-q").AssertError("--out", file, "file");
        Run("merge-models", "--config", Path.Combine(dir, "merge.yaml"), "--out", Path.Combine(file, "out"), "-q").AssertError("--out", file);
        Assert.Equal("keep me", File.ReadAllText(file));
        Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public void Merge_models_reports_success_on_stdout_and_warnings_on_stderr()
    {
        var dir = MergeInputs();
        var r = Run("merge-models", "--config", Path.Combine(dir, "merge.yaml"), "--out", Path.Combine(dir, "out"), "--max-shard-size", "300", "-q");
        Assert.True(r.Code == 0, r.Err);
        Assert.Matches(@"^merged \d+ tensors", r.Out);
        Assert.All(r.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries), l => Assert.StartsWith("warning: ", l));
        Assert.True(Directory.GetFiles(Path.Combine(dir, "out"), "*.safetensors").Length > 1, "300-byte shards");
        Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public void A_libtorch_error_is_reported_by_its_first_line_only()
    {
        using var a = TorchSharp.torch.ones(6);
        var e = Assert.ThrowsAny<Exception>(() => a.view(4));
        Assert.Contains('\n', e.Message.Trim());                                         // libtorch's message carries a backtrace
        var line = CliErrors.Describe(e);
        Assert.DoesNotContain('\n', line);
        Assert.Contains("is invalid for input of size 6", line);
        Assert.Equal(e.Message.Split('\n')[0].Trim(), line);
    }

    [Fact]
    public void Exceptions_only_a_bug_raises_say_so()
    {
        Assert.Contains("a bug in PeftSharp", CliErrors.Describe(new NullReferenceException()));
        Assert.Equal("no such file 'x'", CliErrors.Describe(new FileNotFoundException("no such file 'x'")));
    }
}
