using PeftSharp.Benchmarks;

// TorchSharp's native library must be loadable before anything touches a tensor. When it is not (no libtorch found, say),
// PeftSharp's module initializer has already printed why and what to set.
try { PeftSharp.Native.TorchNative.EnsureLoadable(); }
catch (Exception) { return 1; }

var benchmarks = new Dictionary<string, Func<string[], int>>
{
    ["io"] = CoreBenchmarks.Io,
    ["forward"] = CoreBenchmarks.Forward,
    ["lora"] = CoreBenchmarks.Lora,
    ["train"] = TrainBenchmarks.Train,
    ["methods"] = MethodTable.Run,
    ["optims"] = TrainBenchmarks.Optims,
    ["merge"] = MergeBenchmark.Run,
    ["atlas"] = AtlasBenchmark.Run,
    ["gpu-train"] = GpuTrainBenchmark.Run,
    ["tokenize"] = TokenizeBenchmark.Run,
    ["row-adapters"] = RowAdapterBenchmark.Run,
    ["fusion"] = FusionBenchmark.Run,
    ["sparse"] = SparseBenchmark.Run,
    [SparseBenchmark.ChildVerb] = SparseBenchmark.RunOne,
    [TrainBenchmarks.ChildVerb] = TrainBenchmarks.RunOne,
    [MergeBenchmark.ChildVerb] = MergeBenchmark.RunOne,
    [AtlasBenchmark.ChildVerb] = AtlasBenchmark.RunOne,
    [MethodTable.ChildVerb] = MethodTable.RunOne,
};
if (args.Length == 0 || !benchmarks.TryGetValue(args[0], out var run))
{
    Console.Error.WriteLine($"usage: dotnet run -c Release --project benchmarks/PeftSharp.Benchmarks -- <{string.Join("|", benchmarks.Keys.Where(k => !k.StartsWith('_')))}> [options]");
    return 2;
}
return run(args[1..]);
