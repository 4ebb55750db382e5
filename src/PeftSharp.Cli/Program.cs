using System.CommandLine;
using PeftSharp.Cli;
using PeftSharp.Cli.Commands;

// TorchSharp's native library must be loadable before anything touches a tensor. When it is not (no libtorch found, say),
// PeftSharp's module initializer has already printed why and what to set.
try { PeftSharp.Native.TorchNative.EnsureLoadable(); }
catch (Exception) { return 1; }
var root = new RootCommand("PeftSharp: parameter-efficient fine-tuning (LoRA and friends) for .NET, compatible with Hugging Face PEFT.");
root.Subcommands.Add(TrainCommand.Create());
root.Subcommands.Add(LogitsCommand.Create());
root.Subcommands.Add(GenerateCommand.Create());
root.Subcommands.Add(InspectCommand.Create());
root.Subcommands.Add(MergeCommand.Create());
root.Subcommands.Add(MergeModelsCommand.Create());
return CliErrors.Run(() => root.Parse(args).Invoke());
