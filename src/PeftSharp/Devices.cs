using static TorchSharp.torch;

namespace PeftSharp;

/// <summary>Where tensors live: the <c>--device</c> values every command accepts.</summary>
public static class Devices
{
    public const string Help = "auto, cpu, cuda or cuda:N";

    /// <summary>auto (CUDA when this build and machine have it, else CPU), cpu, cuda or cuda:N.</summary>
    public static Device Parse(string s, string option = "--device")
    {
        s = s.Trim().ToLowerInvariant();
        if (s == "auto") return cuda.is_available() ? CUDA : CPU;
        if (s == "cpu") return CPU;
        if (s == "cuda" || s.StartsWith("cuda:", StringComparison.Ordinal))
        {
            if (!cuda.is_available())
                throw new ArgumentException($"{option} {s}: no CUDA device is usable (this build loads a CPU-only libtorch, or this machine has no GPU; see the README's GPU section)");
            if (s.Length > 5 && (!int.TryParse(s[5..], out var n) || n < 0 || n >= cuda.device_count()))
                throw new ArgumentException($"{option} {s}: this machine has {cuda.device_count()} CUDA device(s), numbered from 0");
            return new Device(s);
        }
        throw new ArgumentException($"{option} '{s}' is not one of {Help}");
    }
}
