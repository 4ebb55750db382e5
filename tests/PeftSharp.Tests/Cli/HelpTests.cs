using PeftSharp.Training;
using PeftSharp.Training.Layerwise;
using static PeftSharp.Tests.Cli.CliRun;

namespace PeftSharp.Tests.Cli;

/// <summary><c>--help</c> describes every option with real text, its default and its group, and says <c>peftsharp</c>.</summary>
public class HelpTests
{
    static readonly string[] Commands = ["train", "generate", "logits", "inspect", "merge", "merge-models"];

    // The help row of an option: from its label to the next option's label.
    static string Row(string help, string label)
    {
        var lines = help.Split('\n');
        var i = Array.FindIndex(lines, l => l.StartsWith("  " + label + " ", StringComparison.Ordinal) || l.TrimEnd() == "  " + label);
        Assert.True(i >= 0, $"no help row for {label}");
        var row = lines[i];
        // Wrapped lines join with one space; a description that starts on the next line keeps a wide gap after the label.
        for (int j = i + 1; j < lines.Length && lines[j].StartsWith("      ", StringComparison.Ordinal); j++)
            row += (j == i + 1 && !System.Text.RegularExpressions.Regex.IsMatch(row, @"^  \S.*?\S {2,}\S") ? "    " : " ") + lines[j].Trim();
        return row;
    }

    [Fact]
    public void Train_help_gives_every_option_its_doc_text_and_default()
    {
        var r = Run("train", "--help");
        Assert.Equal(0, r.Code);
        Assert.Contains("Usage:\n  peftsharp train [options]", r.Out);
        Assert.DoesNotContain("PeftSharp.Cli", r.Out);
        foreach (var key in TrainingOptionsFile.Keys)
        {
            var flag = "--" + key.Replace('_', '-');
            var row = Row(r.Out, r.Out.Contains("  " + flag + ",") ? flag + "," : flag);
            // The label has single spaces; the description starts after the first wider gap.
            var description = System.Text.RegularExpressions.Regex.Match(row, @"^  \S.*?\S {2,}(\S.*)$").Groups[1].Value;
            description = System.Text.RegularExpressions.Regex.Replace(description, @" \[default: [^\]]*\]$", "");
            // Not the bare name with spaces, which is what help said before it read the doc comments.
            Assert.NotEqual(key.Replace('_', ' '), description);
            Assert.True(description.Split(' ').Length >= 3, $"{flag} has no real description: {row}");
        }
        Assert.Contains("Peak learning rate", Row(r.Out, "--learning-rate <x>"));
        Assert.Contains("[default: 0.0005]", Row(r.Out, "--learning-rate <x>"));
        Assert.Contains("[default: cosine]", Row(r.Out, "--lr-scheduler-type, --lr-scheduler <name>"));
        Assert.Contains("--num-train-epochs", Row(r.Out, "--max-steps <n>"));          // a cref, written as the flag
        Assert.Contains("[default: on]", Row(r.Out, "--shuffle [true|false]"));
    }

    [Fact]
    public void Train_help_groups_options_as_the_options_record_does_and_shows_booleans_as_flags()
    {
        var help = Run("train", "--help").Out;
        int At(string text) { var i = help.IndexOf(text, StringComparison.Ordinal); Assert.True(i >= 0, $"no '{text}' in help"); return i; }
        Assert.True(At("\nModel and adapter:") < At("  --lora-r <n>"));
        Assert.True(At("  --lora-r <n>") < At("\nPrecision, memory and device:"));
        Assert.True(At("\nPrecision, memory and device:") < At("  --bf16 ") && At("  --bf16 ") < At("\nData:"));
        Assert.True(At("\nData:") < At("  --train-file <path>") && At("  --train-file <path>") < At("\nOptimisation:"));
        Assert.True(At("\nOptimisation:") < At("  --learning-rate <x>") && At("  --learning-rate <x>") < At("\nOutput, evaluation and checkpoints:"));
        Assert.True(At("\nOutput, evaluation and checkpoints:") < At("  --save-steps <n>"));
        Assert.Matches(@"\n  --bf16 +Keep base weights", help);                         // a flag: no value placeholder
        Assert.Matches(@"\n  --gradient-checkpointing +Recompute", help);
        var method = Row(help, "--method <name>");
        foreach (var name in Methods.Names.Concat(LayerwiseMethods.Names)) Assert.Contains(name, method);
    }

    [Fact]
    public void Every_command_has_help_that_says_peftsharp_and_describes_each_option()
    {
        var root = Run("--help");
        Assert.Equal(0, root.Code);
        Assert.Contains("  peftsharp <command> [options]", root.Out);
        foreach (var command in Commands)
        {
            Assert.Matches($@"\n  {command} +\S", root.Out);
            var r = Run(command, "--help");
            Assert.Equal(0, r.Code);
            Assert.Contains($"Usage:\n  peftsharp {command}", r.Out);
            Assert.DoesNotContain("PeftSharp.Cli", r.Out);
            // Every option row has a description: after the label, or on the next line when the label is long.
            var lines = r.Out.Split('\n');
            for (int i = 0; i < lines.Length; i++)
                if (lines[i].StartsWith("  -", StringComparison.Ordinal))
                    Assert.True(System.Text.RegularExpressions.Regex.IsMatch(lines[i], @"^  -\S.*?\S {2,}\S")
                        || System.Text.RegularExpressions.Regex.IsMatch(lines[i + 1], @"^ {6,}\S"), $"{command}: no description for {lines[i]}");
        }
    }

    [Fact]
    public void Shared_concepts_have_one_name_across_commands()
    {
        foreach (var command in new[] { "merge", "merge-models" })
        {
            var help = Run(command, "--help").Out;
            Assert.Contains("--max-shard-size", help);
            Assert.Contains("[default: 5B]", Row(help, help.Contains("  --max-shard-size,") ? "--max-shard-size," : "--max-shard-size"));
        }
        foreach (var command in new[] { "generate", "logits", "merge" })
        {
            var help = Run(command, "--help").Out;
            Assert.Contains("  --device <device>", help);
            Assert.Contains("  --dtype <float32|bfloat16|float16>", help);
            Assert.Contains("  --adapter <dir>", help);
        }
        Assert.Contains("--seed", Run("merge-models", "--help").Out);
    }
}
