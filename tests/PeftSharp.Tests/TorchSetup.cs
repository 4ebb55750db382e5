using System.Runtime.CompilerServices;

namespace PeftSharp.Tests;

internal static class TorchSetup
{
    // Tests may touch TorchSharp before any PeftSharp type, so prepare its native library up front.
    [ModuleInitializer]
    internal static void Init()
    {
        PeftSharp.Native.TorchNative.EnsureLoadable();
        TorchSharp.torch.set_num_threads(Math.Max(1, Environment.ProcessorCount));
    }
}
