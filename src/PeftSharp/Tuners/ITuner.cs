using PeftSharp.Peft;

namespace PeftSharp.Tuners;

/// <summary>A tuning method: its config type and how it attaches an adapter to a model.</summary>
public interface ITuner
{
    /// <summary>PEFT's <c>peft_type</c> (e.g. "LORA"), or our own for methods PEFT lacks.</summary>
    string PeftType { get; }
    Type ConfigType { get; }
    /// <summary>Keys PEFT writes that this method accepts without modelling them (no warning on load).</summary>
    IReadOnlySet<string> KnownUnusedKeys { get; }
    /// <summary>Adds adapter <paramref name="name"/> to <paramref name="model"/>.</summary>
    void Inject(PeftModel model, string name, PeftConfig config);
    /// <summary>The config to inject with when saved weights will be loaded over it (skip inits that change the base).</summary>
    PeftConfig ForLoading(PeftConfig config) => config;
}
