using PeftSharp.Cli;
using PeftSharp.Generation;
using PeftSharp.IO;
using static PeftSharp.Tests.Cli.CliRun;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Cli;

/// <summary>
/// Bad values are refused up front, naming the option: the model folder is one that does not exist wherever the check
/// needs no model, so an error about the option (not the folder) shows the check ran before anything loaded.
/// </summary>
public class ValidationTests
{
    [Theory]
    [InlineData("--max-new-tokens", "-1", "max_new_tokens")]
    [InlineData("--max-new-tokens", "lots", "--max-new-tokens")]
    [InlineData("--temperature", "-1", "temperature")]
    [InlineData("--temperature", "NaN", "temperature")]
    [InlineData("--top-p", "2", "top_p")]
    [InlineData("--top-p", "-0.5", "top_p")]
    [InlineData("--top-k", "-1", "top_k")]
    [InlineData("--repetition-penalty", "0", "repetition_penalty")]
    [InlineData("--repetition-penalty", "NaN", "repetition_penalty")]
    [InlineData("--prompt-ids", "a,b", "--prompt-ids")]
    [InlineData("--prompt-ids", "-1", "--prompt-ids")]
    [InlineData("--prompt-ids", "1.5", "--prompt-ids")]
    [InlineData("--dtype", "float8", "--dtype")]
    public void Generate_refuses_a_bad_value_before_loading_anything(string option, string value, string named)
    {
        var args = option == "--prompt-ids" ? new[] { "generate", "--model", Nowhere, option, value } : ["generate", "--model", Nowhere, "--prompt-ids", "1", option, value];
        Run(args).AssertError(named).AssertNotAbout(Nowhere);
    }

    [Fact]
    public void Generate_checks_prompt_ids_against_the_vocabulary_before_loading_the_weights()
    {
        Run("generate", "--model", TinyCode, "--prompt-ids", "1,99999999").AssertError("--prompt-ids", "99999999", "vocabulary");
    }

    [Fact]
    public void Generate_with_temperature_0_decodes_greedily()
    {
        var greedy = Run("generate", "--model", TinyCode, "--prompt-ids", "1,2,3", "--max-new-tokens", "4", "--greedy", "--device", "cpu");
        var zero = Run("generate", "--model", TinyCode, "--prompt-ids", "1,2,3", "--max-new-tokens", "4", "--temperature", "0", "--device", "cpu");
        Assert.True(greedy.Code == 0, greedy.Err);
        Assert.Equal(greedy.Out, zero.Out);
        Assert.Equal("", zero.Err);
    }

    [Fact]
    public void Generation_options_are_checked_by_the_library_too()
    {
        Assert.Contains("top_p", Assert.Throws<ArgumentException>(() => new GenerationOptions { TopP = 2 }.Validate()).Message);
        Assert.Contains("temperature", Assert.Throws<ArgumentException>(() => new GenerationOptions { DoSample = true, Temperature = 0 }.Validate()).Message);
        Assert.Contains("max_new_tokens", Assert.Throws<ArgumentException>(() => new GenerationOptions { MaxNewTokens = -1 }.Validate()).Message);
        new GenerationOptions { Temperature = 0 }.Validate();                             // greedy ignores temperature 0, as transformers does
    }

    static string Inputs(string name, Tensor ids, Tensor? mask = null)
    {
        var dir = Merging.TestDirs.New();
        var tensors = new Dictionary<string, Tensor> { ["input_ids"] = ids };
        if (mask is not null) tensors["attention_mask"] = mask;
        var path = Path.Combine(dir, name + ".safetensors");
        SafetensorsWriter.Save(path, tensors);
        return path;
    }

    public static TheoryData<string, string> BadInputs => new()
    {
        { "out-of-vocabulary", "99999" },
        { "negative", "-1" },
        { "float", "float32" },
        { "three-d", "[1,1,3]" },
        { "one-d", "[3]" },
        { "mask-shape", "attention_mask has shape [1,2]" },
        { "mask-values", "only 0 and 1" },
    };

    [Theory]
    [MemberData(nameof(BadInputs))]
    public void Logits_refuses_bad_inputs_naming_the_file_and_tensor(string kind, string named)
    {
        using var scope = NewDisposeScope();
        var path = kind switch
        {
            "out-of-vocabulary" => Inputs(kind, tensor(new long[] { 1, 99999, 3 }).view(1, 3)),
            "negative" => Inputs(kind, tensor(new long[] { 1, -1, 3 }).view(1, 3)),
            "float" => Inputs(kind, tensor(new float[] { 1, 2, 3 }).view(1, 3)),
            "three-d" => Inputs(kind, tensor(new long[] { 1, 2, 3 }).view(1, 1, 3)),
            "one-d" => Inputs(kind, tensor(new long[] { 1, 2, 3 })),
            "mask-shape" => Inputs(kind, tensor(new long[] { 1, 2, 3 }).view(1, 3), ones(1, 2, ScalarType.Int64)),
            _ => Inputs(kind, tensor(new long[] { 1, 2, 3 }).view(1, 3), tensor(new long[] { 1, 2, 1 }).view(1, 3)),
        };
        var outPath = Path.Combine(Path.GetDirectoryName(path)!, "logits.safetensors");
        Run("logits", "--model", TinyCode, "--inputs", path, "--out", outPath).AssertError(path, named);
        Assert.False(File.Exists(outPath));
    }

    [Fact]
    public void Logits_accepts_good_inputs_and_writes_batch_by_length_by_vocabulary()
    {
        using var scope = NewDisposeScope();
        var path = Inputs("good", tensor(new int[] { 1, 2, 3, 4 }).view(2, 2), tensor(new long[] { 0, 1, 1, 1 }).view(2, 2));
        var outPath = Path.Combine(Path.GetDirectoryName(path)!, "logits.safetensors");
        var r = Run("logits", "--model", TinyCode, "--inputs", path, "--out", outPath, "--device", "cpu");
        Assert.True(r.Code == 0, r.Err);
        using var file = SafetensorsFile.Open(outPath);
        Assert.Equal([2L, 2, PeftSharp.Models.ModelConfig.Load(TinyCode).VocabSize], file.Info("logits").Shape);
    }

    [Theory]
    [InlineData("--lora-dropout", "2", "lora_dropout")]
    [InlineData("--lora-dropout", "-0.5", "lora_dropout")]
    [InlineData("--lora-dropout", "NaN", "lora_dropout")]
    [InlineData("--lora-alpha", "NaN", "lora_alpha")]
    [InlineData("--method", "nope", "method")]
    [InlineData("--learning-rate", "fast", "learning_rate")]
    public void Train_refuses_a_bad_value_before_the_model_and_data_load(string option, string value, string named)
    {
        var line = Run("train", "--model", Nowhere, "--train-file", Path.Combine(Nowhere, "data.jsonl"), option, value).AssertError(named);
        line.AssertNotAbout(Nowhere);
        if (option == "--method") Assert.Contains("lora", line);                          // and lists what it accepts
    }

    [Theory]
    [InlineData("--density", "2", "--density")]
    [InlineData("--density", "0", "--density")]
    [InlineData("--max-shard-size", "0", "--max-shard-size")]
    [InlineData("--max-shard-size", "lots", "--max-shard-size")]
    [InlineData("--weights", "a,b", "--weights")]
    [InlineData("--weights", "0.5,0.2,0.3", "--weights")]
    [InlineData("--svd-rank", "0", "--svd-rank")]
    public void Merge_refuses_a_bad_value_before_loading_anything(string option, string value, string named)
    {
        Run("merge", "--model", Nowhere, "--adapter", Path.Combine(Nowhere, "a"), "--adapter", Path.Combine(Nowhere, "b"),
            "--out", Path.Combine(Nowhere, "out"), option, value).AssertError(named).AssertNotAbout(Nowhere);
    }

    [Theory]
    [InlineData("--max-shard-size", "0")]
    [InlineData("--out-shard-size", "0")]
    [InlineData("--out-shard-size", "5X")]
    [InlineData("--adapter-rank", "0")]
    public void Merge_models_refuses_a_bad_value_before_reading_its_config(string option, string value)
    {
        Run("merge-models", "--config", Path.Combine(Nowhere, "merge.yaml"), "--out", Path.Combine(Nowhere, "out"), option, value)
            .AssertError(option).AssertNotAbout("merge.yaml");
    }

    [Theory]
    [InlineData("2000000", 2_000_000L)]
    [InlineData("5B", 5_000_000_000L)]
    [InlineData("500M", 500_000_000L)]
    [InlineData("1.5K", 1_500L)]
    [InlineData("5GB", 5_000_000_000L)]
    [InlineData("4GiB", 4L << 30)]
    [InlineData("100MiB", 100L << 20)]
    public void Sizes_read_as_mergekit_and_transformers_write_them(string text, long bytes)
    {
        Assert.True(Options.TryParseSize(text, out var parsed));
        Assert.Equal(bytes, parsed);
    }
}

internal static class ErrorLineAssertions
{
    /// <summary>The error is not about <paramref name="thing"/> (a folder the command must not have reached).</summary>
    public static string AssertNotAbout(this string errorLine, string thing)
    {
        Assert.DoesNotContain(thing, errorLine);
        return errorLine;
    }
}
