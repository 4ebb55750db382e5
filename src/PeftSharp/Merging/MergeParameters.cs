namespace PeftSharp.Merging;

/// <summary>
/// Parameter lookup as mergekit does it: the model's own parameters first, then the global ones, then the default,
/// each evaluated for the tensor at hand (filters match its name, gradients its depth).
/// </summary>
internal sealed class MergeParameters(MergeConfig config)
{
    /// <summary>Every parameter some method reads; anything else is most likely a typo.</summary>
    public static readonly string[] Known =
        ["weight", "density", "gamma", "normalize", "rescale", "int8_mask", "t", "filter_wise", "majority_sign_method", "convention"];

    public void CheckNames()
    {
        void Check(IReadOnlyDictionary<string, ParameterSetting>? ps, string where)
        {
            foreach (var name in ps?.Keys ?? Enumerable.Empty<string>())
                if (!Known.Contains(name))
                    throw new MergeException($"{where}: unknown parameter '{name}' (known: {string.Join(", ", Known)})");
        }
        Check(config.Parameters, "parameters");
        for (int i = 0; i < config.Models.Count; i++) Check(config.Models[i].Parameters, $"models[{i}] ({config.Models[i].Model}).parameters");
    }

    public object? Find(string name, MergeModel? model, string tensor, double depth)
    {
        if (model?.Parameters is { } own && own.TryGetValue(name, out var s) && s.Evaluate(tensor, depth) is { } v) return v;
        if (config.Parameters.TryGetValue(name, out var g) && g.Evaluate(tensor, depth) is { } gv) return gv;
        return null;
    }

    public double Number(string name, MergeModel? model, string tensor, double depth, double? fallback = null) =>
        Find(name, model, tensor, depth) switch
        {
            double d => d,
            null when fallback is double f => f,
            null => throw new MergeException($"parameter '{name}' is required{Of(model)} (tensor '{tensor}'): " +
                "set it under the model's parameters or the global ones"),
            var other => throw new MergeException($"parameter '{name}'{Of(model)} must be a number, got '{other}' (tensor '{tensor}')"),
        };

    public bool Flag(string name, string tensor, double depth, bool fallback) =>
        Find(name, null, tensor, depth) switch
        {
            bool b => b,
            double d => d != 0,
            null => fallback,
            var other => throw new MergeException($"parameter '{name}' must be true or false, got '{other}' (tensor '{tensor}')"),
        };

    public string Text(string name, string tensor, double depth, string fallback) =>
        Find(name, null, tensor, depth)?.ToString() ?? fallback;

    public SignMethod SignMethod(string tensor, double depth) =>
        Text("majority_sign_method", tensor, depth, "total") switch
        {
            "total" or "sum" => Merging.SignMethod.Total,
            "frequency" or "count" => Merging.SignMethod.Frequency,
            var other => throw new MergeException($"majority_sign_method '{other}' is not one of total (sum), frequency (count)"),
        };

    public TiesConvention Convention(string tensor, double depth) =>
        Text("convention", tensor, depth, "mergekit") switch
        {
            "mergekit" => TiesConvention.Mergekit,
            "peft" => TiesConvention.Peft,
            var other => throw new MergeException($"convention '{other}' is not one of mergekit, peft"),
        };

    static string Of(MergeModel? model) => model is null ? "" : $" for model '{model.Model}'";
}
