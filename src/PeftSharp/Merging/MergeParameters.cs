namespace PeftSharp.Merging;

/// <summary>
/// Parameter lookup as mergekit does it: the model's own parameters first, then the global ones, then the method's
/// default, each evaluated for the tensor at hand (filters match its name, gradients its depth). Only what the method
/// declares can be set or read, so nothing in a config is silently ignored.
/// </summary>
internal sealed class MergeParameters(MergeConfig config, MergeMethod method)
{
    /// <summary>
    /// Every parameter set must be one the method reads; a model's own <c>parameters:</c> may only hold per-model
    /// ones (mergekit reads global parameters from the top level only).
    /// </summary>
    public void Check()
    {
        foreach (var name in config.Parameters.Keys)
            if (method.Find(name) is null)
                throw new MergeException($"parameters: merge_method '{method.Name}' does not read '{name}' (it reads {method.Describe()})");
        for (int i = 0; i < config.Models.Count; i++)
            foreach (var name in config.Models[i].Parameters?.Keys ?? Enumerable.Empty<string>())
            {
                if (method.ModelParameters.Any(p => p.Name == name)) continue;
                string where = $"models[{i}] ({config.Models[i].Model}).parameters";
                throw new MergeException(method.Parameters.Any(p => p.Name == name)
                    ? $"{where}: '{name}' is a global parameter of merge_method '{method.Name}': set it under the top-level parameters:"
                    : $"{where}: merge_method '{method.Name}' does not read '{name}' (it reads {method.Describe()})");
            }
    }

    public double Number(string name, MergeModel? model, string tensor, double depth) =>
        NumberOrNull(name, model, tensor, depth)
        ?? throw new MergeException($"parameter '{name}' is required{Of(model)} (tensor '{tensor}'): " +
            "set it under the model's parameters or the global ones");

    /// <summary>A number, or null when it is unset and has no default.</summary>
    public double? NumberOrNull(string name, MergeModel? model, string tensor, double depth) =>
        Find(name, model, tensor, depth) switch
        {
            double d => d,
            null => null,
            var other => throw new MergeException($"parameter '{name}'{Of(model)} must be a number, got '{other}' (tensor '{tensor}')"),
        };

    public bool Flag(string name, string tensor, double depth) =>
        Find(name, null, tensor, depth) switch
        {
            bool b => b,
            double d => d != 0,
            var other => throw new MergeException($"parameter '{name}' must be true or false, got '{other ?? "nothing"}' (tensor '{tensor}')"),
        };

    public string Text(string name, string tensor, double depth) =>
        Find(name, null, tensor, depth)?.ToString() ?? throw new MergeException($"parameter '{name}' is required (tensor '{tensor}')");

    public SignMethod SignMethod(string tensor, double depth) =>
        Text("majority_sign_method", tensor, depth) switch
        {
            "total" or "sum" => Merging.SignMethod.Total,
            "frequency" or "count" => Merging.SignMethod.Frequency,
            var other => throw new MergeException($"majority_sign_method '{other}' is not one of total (sum), frequency (count)"),
        };

    public TiesConvention Convention(string tensor, double depth) =>
        Text("convention", tensor, depth) switch
        {
            "mergekit" => TiesConvention.Mergekit,
            "peft" => TiesConvention.Peft,
            var other => throw new MergeException($"convention '{other}' is not one of mergekit, peft"),
        };

    object? Find(string name, MergeModel? model, string tensor, double depth)
    {
        var def = method.Find(name) ?? throw new InvalidOperationException($"merge_method '{method.Name}' reads '{name}' without declaring it");
        if (model?.Parameters is { } own && own.TryGetValue(name, out var s) && s.Evaluate(tensor, depth) is { } v) return v;
        if (config.Parameters.TryGetValue(name, out var g) && g.Evaluate(tensor, depth) is { } gv) return gv;
        return def.Default;
    }

    static string Of(MergeModel? model) => model is null ? "" : $" for model '{model.Model}'";
}
