using PeftSharp.Tuners.SparseFt.Lift;
using PeftSharp.Tuners.SparseFt.LtSft;
using PeftSharp.Tuners.SparseFt.Masks;
using PeftSharp.Tuners.SparseFt.S2ft;
using PeftSharp.Tuners.SparseFt.Sara;
using PeftSharp.Tuners.SparseFt.Spiel;

namespace PeftSharp.Tuners.SparseFt;

/// <summary>The sparse fine-tuning methods by name; each is also a <c>--method</c>.</summary>
public static class SparseMethods
{
    public static readonly IReadOnlyList<ISparseMethod> All =
    [
        new RandomMaskMethod(),
        new MagnitudeMethod(),
        new SpielMethod(),
        new LtSftMethod(),
        new LiftMethod(),
        new SaraMethod(),
        new S2ftMethod(),
        new Graft.GraftMethod(),
    ];

    public static ISparseMethod Get(string name) =>
        All.FirstOrDefault(m => m.Name == name)
        ?? throw new ArgumentException($"sparse fine-tuning method '{name}' is not one of: {string.Join(", ", All.Select(m => m.Name))}");
}
