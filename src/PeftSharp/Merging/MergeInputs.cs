namespace PeftSharp.Merging;

/// <summary>One model of the merge, opened: its config entry, its source, and the model its task vector is taken against.</summary>
internal sealed record MergeInput(int Index, MergeModel Entry, ModelSource Source, ModelSource? Origin);

/// <summary>
/// The models a config names, opened once each. References are local paths (mergekit's Hub ids are not fetched),
/// tried from the working directory and then from the config's folder; <c>path+adapter</c> puts a LoRA on a model,
/// and an adapter folder alone applies to the base model (or to the entry's source_base).
/// </summary>
internal sealed class MergeInputs : IDisposable
{
    readonly Dictionary<string, ModelSource> opened = new();
    readonly string? baseDirectory;

    public ModelSource? Base { get; private set; }
    public List<MergeInput> Models { get; } = new();

    MergeInputs(string? baseDirectory) => this.baseDirectory = baseDirectory;

    public static MergeInputs Open(MergeConfig config)
    {
        var inputs = new MergeInputs(config.BaseDirectory);
        try
        {
            if (config.BaseModel is { } b) inputs.Base = inputs.Source(b, under: null, what: "base_model");
            for (int i = 0; i < config.Models.Count; i++)
            {
                var m = config.Models[i];
                var origin = m.SourceBase is { } sb ? inputs.Source(sb, under: null, what: $"models[{i}].source_base") : inputs.Base;
                var source = inputs.Source(m.Model, under: origin, what: $"models[{i}]");
                inputs.Models.Add(new MergeInput(i, m, source, origin));
            }
            return inputs;
        }
        catch
        {
            inputs.Dispose();
            throw;
        }
    }

    /// <summary>The models other than the base itself: those that have a task vector.</summary>
    public IEnumerable<MergeInput> NonBase => Models.Where(m => !ReferenceEquals(m.Source, Base));

    /// <summary>Every opened source, each once (inputs, bases, source bases).</summary>
    public IEnumerable<ModelSource> All => opened.Values;

    ModelSource Source(string reference, ModelSource? under, string what)
    {
        var whole = Resolve(reference);
        string? adapterPart = null;
        var modelPart = whole;
        if (whole is null && reference.Contains('+'))
        {
            // mergekit's "model+lora": a LoRA adapter applied to a model.
            var plus = reference.IndexOf('+');
            modelPart = Resolve(reference[..plus]);
            adapterPart = Resolve(reference[(plus + 1)..]);
            if (modelPart is null || adapterPart is null) throw NotFound(reference, what);
            under = Source(reference[..plus], null, what);
        }
        if (modelPart is null) throw NotFound(reference, what);
        if (adapterPart is null && AdapterDelta.IsAdapter(modelPart)) adapterPart = modelPart;

        if (adapterPart is not null)
        {
            if (under is null)
                throw new MergeException($"{what}: '{reference}' is a LoRA adapter, which needs a model to apply to: set base_model, " +
                    "or write 'model_path+adapter_path'");
            var key = $"{Path.GetFullPath(adapterPart)}|on|{under.Reference}";
            if (!opened.TryGetValue(key, out var a)) opened[key] = a = ModelSource.WithAdapter(reference, adapterPart, under);
            return a;
        }
        var full = Path.GetFullPath(modelPart);
        if (!opened.TryGetValue(full, out var s)) opened[full] = s = ModelSource.Checkpoint(reference, modelPart);
        return s;
    }

    string? Resolve(string reference)
    {
        if (File.Exists(reference) || Directory.Exists(reference)) return reference;
        if (baseDirectory is not null && !Path.IsPathRooted(reference))
        {
            var there = Path.Combine(baseDirectory, reference);
            if (File.Exists(there) || Directory.Exists(there)) return there;
        }
        return null;
    }

    MergeException NotFound(string reference, string what) =>
        new($"{what}: model '{reference}' not found (looked in {Directory.GetCurrentDirectory()}" +
            (baseDirectory is null ? "" : $" and in {baseDirectory}") + "). PeftSharp merges local folders only: " +
            "download Hub models first (e.g. huggingface-cli download ORG/NAME --local-dir DIR)");

    public void Dispose()
    {
        foreach (var s in opened.Values) s.Dispose();
    }
}
