using PeftSharp.Peft;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Vera;

/// <summary>
/// VeRA's shared frozen projections, sized for the largest adapted layer: A [r, max in], B [max out, r]. Layers use
/// the top-left slice they need. Saved as <c>base_model.vera_A</c>/<c>base_model.vera_B</c> when <c>save_projection</c>.
/// </summary>
public sealed class VeraProjections : IAdapterExtras
{
    public const string KeyA = "base_model.vera_A", KeyB = "base_model.vera_B";
    readonly bool saved;

    VeraProjections(Tensor a, Tensor b, bool saved)
    {
        A = a;
        B = b;
        this.saved = saved;
    }

    public Tensor A { get; }
    public Tensor B { get; }

    /// <summary>
    /// Draws A then B as PEFT does: kaiming-uniform (gain √2, fan-in: bound √6/√fan_in) from torch's CPU generator
    /// seeded with <paramref name="seed"/>. TorchSharp runs libtorch's own generator, so the values are bit-identical.
    /// </summary>
    public static VeraProjections Generate(int r, long maxIn, long maxOut, long seed, Device device, bool saved)
    {
        using var g = new Generator((ulong)seed);
        using var _ = no_grad();
        var a = KaimingUniform(r, maxIn, g);
        var b = KaimingUniform(maxOut, r, g);
        return new VeraProjections(a.to(device).DetachFromDisposeScope(), b.to(device).DetachFromDisposeScope(), saved);
    }

    static Tensor KaimingUniform(long rows, long fanIn, Generator g)
    {
        double bound = Math.Sqrt(3.0) * Math.Sqrt(2.0) / Math.Sqrt(fanIn);
        return empty(rows, fanIn, dtype: ScalarType.Float32).uniform_(-bound, bound, g);
    }

    public IEnumerable<(string Key, Tensor Value)> StateDict() => saved ? [(KeyA, A), (KeyB, B)] : [];

    public void LoadStateDict(IReadOnlyDictionary<string, Tensor> tensors, string source)
    {
        if (!saved) return; // regenerated from projection_prng_key
        using var _ = no_grad();
        foreach (var (key, target) in StateDict())
        {
            if (!tensors.TryGetValue(key, out var t))
                throw new InvalidDataException($"{source}: save_projection is true but '{key}' is missing; " +
                    "set save_projection to false in adapter_config.json to regenerate it from projection_prng_key");
            if (!t.shape.SequenceEqual(target.shape))
                throw new InvalidDataException($"{source}: '{key}' has shape {AdapterTensors.Shape(t)} but this model's targets need " +
                    $"{AdapterTensors.Shape(target)} (r, largest in/out features): is this adapter for another model?");
            target.copy_(t);
        }
    }

    public IEnumerable<Parameter> TrainableParameters() => [];
}
