using PeftSharp.Models;
using PeftSharp.Peft;
using static TorchSharp.torch;

namespace PeftSharp.Generation.Composition;

/// <summary>
/// A view of an adapted model that runs with its adapters disabled, so one loaded model serves as both the tuned and the
/// untuned member of a <see cref="LogitMix"/> (each view still gets its own KV cache).
/// </summary>
public sealed class AdaptersOff(PeftModel model) : ILanguageModel
{
    public PeftModel Model => model;

    public Device Device => model.Device;

    public Tensor Forward(ModelInputs inputs)
    {
        using var off = model.DisableAdapters();
        return model.Forward(inputs);
    }

    public KvCache NewCache()
    {
        using var off = model.DisableAdapters();
        return model.NewCache();
    }

    public bool CacheExpires(long cached, long total) => model.CacheExpires(cached, total);
}
