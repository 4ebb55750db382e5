using PeftSharp.Tuners.AdaLora;
using PeftSharp.Tuners.Hydra;
using PeftSharp.Tuners.IncreLora;
using PeftSharp.Tuners.IA3;
using PeftSharp.Tuners.LoHa;
using PeftSharp.Tuners.LoKr;
using PeftSharp.Tuners.Loldu;
using PeftSharp.Tuners.Lora;
using PeftSharp.Tuners.Meteora;
using PeftSharp.Tuners.Miss;
using PeftSharp.Tuners.MixLora;
using PeftSharp.Tuners.Poly;
using PeftSharp.Tuners.Vera;
using PeftSharp.Tuners.BitFit;
using PeftSharp.Tuners.Bottleneck;
using PeftSharp.Tuners.LnTuning;
using PeftSharp.Tuners.PrefixTuning;
using PeftSharp.Tuners.PromptTuning;
using PeftSharp.Tuners.PTuning;
using PeftSharp.Tuners.Ssf;
using PeftSharp.Tuners.SparseFt;
using PeftSharp.Tuners.SparseFt.Dsee;
using PeftSharp.Tuners.SparseFt.Shira;

namespace PeftSharp.Tuners;

/// <summary>
/// Every tuning method, by <c>peft_type</c>. A new method is a folder plus one line here; its <c>--method</c>
/// presets come with it, in registration order.
/// </summary>
public static class TunerRegistry
{
    static readonly Dictionary<string, ITuner> Tuners = new(StringComparer.OrdinalIgnoreCase);

    static TunerRegistry()
    {
        Register(new LoraTuner());
        Register(new IA3Tuner());
        Register(new LoHaTuner());
        Register(new LoKrTuner());
        Register(new VeraTuner());
        Register(new AdaLoraTuner());
        Register(new MissTuner());
        Register(new PromptTuningTuner());
        Register(new PrefixTuningTuner());
        Register(new PTuningTuner());
        Register(new LnTuningTuner());
        Register(new BottleneckTuner());
        Register(new SsfTuner());
        Register(new BitFitTuner());
        Register(new LolduTuner());
        Register(new HydraTuner());
        Register(new IncreLoraTuner());
        Register(new SparseFtTuner());
        Register(new ShiraTuner());
        Register(new DseeTuner());
        Register(new PolyTuner());
        Register(new MixLoraTuner());
        Register(new MeteoraTuner());
    }

    public static void Register(ITuner tuner) => Tuners[tuner.PeftType] = tuner;

    public static ITuner? Find(string peftType) => Tuners.GetValueOrDefault(peftType);

    public static ITuner For(PeftConfig config) =>
        Find(config.PeftType) ?? throw new NotSupportedException($"peft_type '{config.PeftType}' is not registered");

    public static IEnumerable<string> Names => Tuners.Keys.Order();

    /// <summary>Every method's <c>--method</c> presets, in registration order.</summary>
    public static IReadOnlyList<MethodPreset> Presets => Tuners.Values.SelectMany(t => t.Presets).ToList();

    public static MethodPreset? Preset(string name) =>
        Presets.FirstOrDefault(p => string.Equals(p.Name, name, StringComparison.OrdinalIgnoreCase));
}
