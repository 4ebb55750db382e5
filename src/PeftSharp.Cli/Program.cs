using PeftSharp.Cli;

// TorchSharp's native library must be loadable before anything touches a tensor. When it is not (no libtorch found, say),
// PeftSharp's module initializer has already printed why and what to set.
try { PeftSharp.Native.TorchNative.EnsureLoadable(); }
catch (Exception) { return 1; }
return PeftSharpCli.Run(args, Console.Out, Console.Error);
