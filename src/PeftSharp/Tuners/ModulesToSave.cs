using PeftSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace PeftSharp.Tuners;

/// <summary>
/// PEFT's <c>modules_to_save</c>: a fully trainable copy of a module (e.g. a classifier head) per adapter,
/// used instead of the original while that adapter is active. Saved under the original module's name.
/// </summary>
public sealed class ModulesToSaveWrapper : Module<Tensor, Tensor>
{
    Module<Tensor, Tensor> original_module;
    AdapterDict<Module<Tensor, Tensor>> modules_to_save = new();

    public ModulesToSaveWrapper(Module<Tensor, Tensor> original) : base("ModulesToSaveWrapper")
    {
        original_module = original;
        RegisterComponents();
        train(original.training);
    }

    public Module<Tensor, Tensor> Original => original_module;
    public string? ActiveAdapter { get; set; }
    public bool Disabled { get; set; }
    public IReadOnlyCollection<string> AdapterNames => modules_to_save.Keys;

    public void AddAdapter(string name)
    {
        if (modules_to_save.ContainsKey(name)) return;
        modules_to_save.Add(name, Copy(original_module));
    }

    public void DeleteAdapter(string name)
    {
        modules_to_save.Remove(name);
        if (ActiveAdapter == name) ActiveAdapter = null;
    }

    public Module<Tensor, Tensor> Copy(string adapter) => modules_to_save[adapter];

    public override Tensor forward(Tensor x) =>
        !Disabled && ActiveAdapter is { } a && modules_to_save.TryGetValue(a, out var m) ? m.call(x) : original_module.call(x);

    /// <summary>Parameters of one adapter's copy, by their names inside the module ("weight", "bias").</summary>
    public IEnumerable<(string Name, Parameter P)> Parameters(string adapter) => modules_to_save[adapter].named_parameters();

    // TorchSharp has no generic deep copy: rebuild the layer types heads are made of and copy their weights.
    static Module<Tensor, Tensor> Copy(Module<Tensor, Tensor> m)
    {
        using var _ = no_grad();
        Module<Tensor, Tensor> copy = m switch
        {
            Linear l => nn.Linear(l.in_features, l.out_features, l.bias is not null, device: l.weight!.device, dtype: l.weight.dtype),
            Embedding e => nn.Embedding(e.weight!.shape[0], e.weight.shape[1], device: e.weight.device, dtype: e.weight.dtype),
            LayerNorm n => nn.LayerNorm(n.weight!.shape, device: n.weight.device, dtype: n.weight.dtype),
            Conv1D c => new Conv1D(c.InFeatures, c.OutFeatures, c.weight.dtype),
            _ => throw new NotSupportedException($"modules_to_save cannot copy a {m.GetType().Name} (supported: Linear, Embedding, LayerNorm, Conv1D)"),
        };
        copy.train(m.training);
        var source = m.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, p) in copy.named_parameters())
        {
            p.copy_(source[name]);
            p.requires_grad = true;
        }
        return copy;
    }
}
