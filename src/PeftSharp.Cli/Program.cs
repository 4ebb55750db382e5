using System.CommandLine;
using PeftSharp.Cli.Commands;

// TorchSharp's native library must be loadable before any command touches a tensor.
PeftSharp.Native.TorchNative.EnsureLoadable();

var root = new RootCommand("peftsharp: parameter-efficient fine-tuning and model merging for .NET");
root.Subcommands.Add(MergeModelsCommand.Create());
return root.Parse(args).Invoke();
