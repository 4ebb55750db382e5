using PeftSharp.Models;
using PeftSharp.Peft;
using static TorchSharp.torch;

namespace PeftSharp.Generation.Composition;

/// <summary>
/// A view of an adapted model that runs with one named adapter active, so several experts loaded into one small model
/// serve as separate ensemble members (each view still gets its own KV cache). The model's active set is restored after
/// every forward.
/// </summary>
public sealed class AdapterView : ILanguageModel
{
    readonly string adapter;

    public AdapterView(PeftModel model, string adapter)
    {
        if (!model.Configs.ContainsKey(adapter))
            throw new KeyNotFoundException($"no adapter named '{adapter}'; adapters: {string.Join(", ", model.Configs.Keys)}");
        (Model, this.adapter) = (model, adapter);
    }

    public PeftModel Model { get; }

    public string Adapter => adapter;

    public Device Device => Model.Device;

    public Tensor Forward(ModelInputs inputs)
    {
        var before = Model.ActiveAdapters.ToArray();
        Model.SetAdapter(adapter);
        try { return Model.Forward(inputs); }
        finally { Model.SetAdapter(before); }
    }

    public KvCache NewCache() => Model.NewCache();

    public bool CacheExpires(long cached, long total) => Model.CacheExpires(cached, total);
}
