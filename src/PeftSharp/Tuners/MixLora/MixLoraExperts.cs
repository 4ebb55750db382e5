using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.MixLora;

/// <summary>
/// One adapter's mixture in one feed-forward block: the router <c>gate</c> [E, hidden] and, per expert and targeted
/// projection, LoRA factors A [r, in] (kaiming-uniform, as nn.Linear) and B [out, r] (zero), so a fresh mixture is the FFN.
/// </summary>
public sealed class MixLoraExperts : nn.Module
{
    readonly Dictionary<(int Expert, string Proj), (Parameter A, Parameter B)> loras = new();

    public MixLoraExperts(long hidden, int experts, int r, IReadOnlyDictionary<string, (long In, long Out)> projections,
        double initRange, Device device) : base("MixLoraExperts")
    {
        using var _ = no_grad();
        Gate = new Parameter(empty(experts, hidden, device: device).normal_(0, initRange));
        register_parameter("gate", Gate);
        for (int e = 0; e < experts; e++)
            foreach (var (proj, (inF, outF)) in projections)
            {
                var a = new Parameter(empty(r, inF, device: device));
                nn.init.kaiming_uniform_(a, Math.Sqrt(5));
                var b = new Parameter(zeros(outF, r, device: device));
                register_parameter($"e{e}_{proj}_A", a);
                register_parameter($"e{e}_{proj}_B", b);
                loras[(e, proj)] = (a, b);
            }
        Experts = experts;
    }

    public Parameter Gate { get; }
    public int Experts { get; }

    public (Parameter A, Parameter B)? Lora(int expert, string proj) => loras.TryGetValue((expert, proj), out var l) ? l : null;

    /// <summary>Saved names, relative to the feed-forward block.</summary>
    public IEnumerable<(string Key, Tensor Value)> StateDict()
    {
        yield return ("mixlora_gate.weight", Gate);
        foreach (var ((e, proj), (a, b)) in loras.OrderBy(kv => kv.Key.Expert).ThenBy(kv => kv.Key.Proj, StringComparer.Ordinal))
        {
            yield return ($"mixlora_experts.{e}.{proj}.lora_A.weight", a);
            yield return ($"mixlora_experts.{e}.{proj}.lora_B.weight", b);
        }
    }
}
