using System.CommandLine;
using System.CommandLine.Help;
using PeftSharp.Cli.Commands;

namespace PeftSharp.Cli;

/// <summary>The <c>peftsharp</c> command: its commands, its help, and the one place where failures become exit codes.</summary>
internal static class PeftSharpCli
{
    public static RootCommand Create()
    {
        var root = new RootCommand("PeftSharp: parameter-efficient fine-tuning (LoRA and friends) for .NET, compatible with Hugging Face PEFT.")
        {
            TrainCommand.Create(), LogitsCommand.Create(), GenerateCommand.Create(), InspectCommand.Create(),
            MergeCommand.Create(), MergeModelsCommand.Create(), AnalyzeCommand.Create(), GraftCommand.Create(),
        };
        foreach (var help in root.Options.OfType<HelpOption>()) help.Description = "show this help";
        return root;
    }

    /// <summary>
    /// Runs one command line. Help goes to <paramref name="output"/>; a parse error or a failure is one <c>error:</c>
    /// line on <paramref name="error"/> and exit code 1.
    /// </summary>
    public static int Run(string[] args, TextWriter output, TextWriter error)
    {
        var parse = Create().Parse(args);
        if (parse.Action is HelpAction)
        {
            CliHelp.Write(parse.CommandResult.Command, output, HelpWidth(output));
            return 0;
        }
        if (parse.Errors.Count > 0)
        {
            var errors = parse.Errors.Select(e => e.Message.Trim()).Distinct().ToList();
            // "peftsharp frob": the unknown word says more than "Required command was not provided".
            if (parse.CommandResult.Command is RootCommand root)
            {
                var missing = $"no command given; one of {string.Join(", ", root.Subcommands.Select(c => c.Name))}";
                errors = errors.Count > 1 ? errors.Skip(1).ToList() : [missing];
            }
            var messages = string.Join(" ", errors);
            error.WriteLine($"error: {messages} ('{CliHelp.Path(parse.CommandResult.Command)} --help' lists the options)");
            return CliErrors.Failed;
        }
        var config = new InvocationConfiguration { Output = output, Error = error, EnableDefaultExceptionHandler = false };
        return CliErrors.Run(() => parse.Invoke(config), error);
    }

    static int HelpWidth(TextWriter output)
    {
        if (output != Console.Out || Console.IsOutputRedirected) return 100;
        try { return Math.Clamp(Console.WindowWidth, 60, 160); }
        catch (IOException) { return 100; }
    }
}
