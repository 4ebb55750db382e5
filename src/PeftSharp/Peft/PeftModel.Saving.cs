using PeftSharp.IO;
using PeftSharp.Models;
using PeftSharp.Tuners;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Peft;

public sealed partial class PeftModel
{
    public const string WeightsFile = "adapter_model.safetensors";
    const string Prefix = "base_model.model.";

    /// <summary>
    /// Writes every adapter (or <paramref name="adapters"/>) in PEFT's layout: "default" in <paramref name="folder"/>,
    /// others in sub-folders named after them. With <paramref name="convertToLora"/>, adapters whose init changed the
    /// base (PiSSA, OLoRA) are saved as plain deltas against the original base weights (see <see cref="ITuner.BeforeSave"/>).
    /// </summary>
    public void Save(string folder, IReadOnlyList<string>? adapters = null, bool convertToLora = false)
    {
        foreach (var name in adapters ?? configs.Keys.ToList())
        {
            var dir = name == "default" ? folder : Path.Combine(folder, name);
            Directory.CreateDirectory(dir);
            var config = configs[name] with { InferenceMode = true, BaseModelNameOrPath = configs[name].BaseModelNameOrPath };
            var tensors = AdapterStateDict(name);
            config = TunerRegistry.For(config).BeforeSave(this, name, config, tensors, convertToLora);
            using var scope = NewDisposeScope();
            var cpu = tensors.ToDictionary(kv => kv.Key, kv => kv.Value.detach().cpu().contiguous());
            SafetensorsWriter.Save(Path.Combine(dir, WeightsFile), cpu, new Dictionary<string, string> { ["format"] = "pt" });
            PeftConfigJson.Save(config, dir);
        }
    }

    /// <summary>The adapter's tensors under the names PEFT saves them with.</summary>
    public Dictionary<string, Tensor> AdapterStateDict(string adapter)
    {
        var result = new Dictionary<string, Tensor>();
        foreach (var (path, layer) in TunerLayers())
            if (layer.AdapterNames.Contains(adapter))
                foreach (var (key, t) in layer.StateDict(adapter)) result[$"{Prefix}{path}.{key}"] = t;
        foreach (var (path, w) in SavedModules())
            if (w.AdapterNames.Contains(adapter))
                foreach (var (key, p) in w.Parameters(adapter)) result[$"{Prefix}{path}.{key}"] = p;
        if (extras.GetValueOrDefault(adapter) is { } e)
            foreach (var (key, t) in e.StateDict()) result[key] = t;
        foreach (var (key, p) in TrainedBaseParameters(adapter)) result[Prefix + key] = p;
        return result;
    }

    // Base-model parameters the adapter's method trains and saves (LoRA's bias option).
    IEnumerable<(string Name, Parameter P)> TrainedBaseParameters(string adapter) =>
        configs.GetValueOrDefault(adapter) is { } c ? TunerRegistry.For(c).TrainedBaseParameters(this, c) : [];

    /// <summary>Loads a PEFT adapter folder onto <paramref name="model"/> (PEFT's PeftModel.from_pretrained).</summary>
    public static PeftModel FromPretrained(PretrainedModel model, string folder, string adapterName = "default", bool isTrainable = false)
    {
        var pm = new PeftModel(model);
        foreach (var p in model.parameters()) p.requires_grad = false;
        pm.LoadAdapter(folder, adapterName, isTrainable);
        pm.SetAdapter(adapterName);
        return pm;
    }

    /// <summary>Adds an adapter saved by PEFT or by us, under <paramref name="adapterName"/>.</summary>
    public void LoadAdapter(string folder, string adapterName, bool isTrainable = false)
    {
        var config = PeftConfigJson.Load(Path.Combine(folder, PeftConfigJson.FileName)) with { InferenceMode = !isTrainable };
        var weightsPath = Path.Combine(folder, WeightsFile);
        if (!File.Exists(weightsPath))
        {
            CheckpointFormat.RefuseIfPickleOnly(folder);
            throw new FileNotFoundException($"{folder}: no {WeightsFile}", weightsPath);
        }
        var configPath = Path.Combine(folder, PeftConfigJson.FileName);
        // A config the model cannot take (r: 0, a target that matches nothing) is named by its file.
        try { AddAdapter(adapterName, config, loading: true); }
        catch (ArgumentException ex) when (!ex.Message.Contains(folder)) { throw new ArgumentException($"{configPath}: {ex.Message}", ex); }
        catch (NotSupportedException ex) when (!ex.Message.Contains(folder)) { throw new NotSupportedException($"{configPath}: {ex.Message}", ex); }
        using var file = SafetensorsFile.Open(weightsPath);
        using var scope = NewDisposeScope();
        var all = file.LoadAll();
        NonFiniteWeights.Report(all.Where(kv => NonFiniteWeights.Has(kv.Value)).Select(kv => (weightsPath, kv.Key)));
        var used = new HashSet<string>();
        foreach (var (path, layer) in TunerLayers())
        {
            if (!layer.AdapterNames.Contains(adapterName)) continue;
            var own = SubDict(all, $"{Prefix}{path}.", used);
            layer.LoadStateDict(adapterName, own, $"{Prefix}{path}", weightsPath);
        }
        using (no_grad())
        {
            foreach (var (path, w) in SavedModules())
            {
                if (!w.AdapterNames.Contains(adapterName)) continue;
                foreach (var (key, p) in w.Parameters(adapterName))
                {
                    var full = $"{Prefix}{path}.{key}";
                    if (!all.TryGetValue(full, out var t)) throw new InvalidDataException($"{weightsPath}: missing tensor '{full}' (modules_to_save)");
                    p.copy_(t);
                    used.Add(full);
                }
            }
            // Optional: PEFT's own bias="lora_only" save finds no bias to write (it looks beside base_layer).
            foreach (var (name, p) in TrainedBaseParameters(adapterName))
                if (all.TryGetValue(Prefix + name, out var t)) { p.copy_(t); used.Add(Prefix + name); }
        }
        if (extras.GetValueOrDefault(adapterName) is { } e)
        {
            var rest = all.Where(kv => !used.Contains(kv.Key)).ToDictionary(kv => kv.Key, kv => kv.Value);
            e.LoadStateDict(rest, weightsPath);
            foreach (var (k, _) in e.StateDict()) used.Add(k);
        }
        var unexpected = all.Keys.Where(k => !used.Contains(k)).ToList();
        if (unexpected.Count > 0)
            throw new InvalidDataException($"{weightsPath}: {unexpected.Count} tensors match no adapted module of this model: " +
                $"{string.Join(", ", unexpected.Take(10))}: is this adapter for another architecture?");
    }

    static Dictionary<string, Tensor> SubDict(Dictionary<string, Tensor> all, string prefix, HashSet<string> used)
    {
        var own = new Dictionary<string, Tensor>();
        foreach (var (k, v) in all)
        {
            if (!k.StartsWith(prefix, StringComparison.Ordinal)) continue;
            var rest = k[prefix.Length..];
            if (rest.StartsWith("base_layer.", StringComparison.Ordinal)) continue; // a trained bias, loaded separately
            own[rest] = v;
            used.Add(k);
        }
        return own;
    }
}
