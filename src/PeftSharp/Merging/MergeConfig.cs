namespace PeftSharp.Merging;

/// <summary>
/// A merge as mergekit's YAML describes it (https://github.com/arcee-ai/mergekit): a method, an optional base model,
/// the models with their own parameters, and global parameters. Names follow mergekit's keys; read one with
/// <see cref="MergeConfigYaml.Load"/>. PeftSharp adds <see cref="Lines"/>, <see cref="AdapterOutput"/> and
/// <see cref="MergeModel.SourceBase"/>, which mergekit does not have.
/// </summary>
public sealed record MergeConfig
{
    /// <summary>One of <see cref="MergeMethods.Names"/>: linear, task_arithmetic, ties, dare_ties, slerp, ...</summary>
    public required string MergeMethod { get; init; }

    /// <summary>The model task vectors are taken against (and slerp's t = 0 end). Path, or <c>path+adapter</c>.</summary>
    public string? BaseModel { get; init; }

    public IReadOnlyList<MergeModel> Models { get; init; } = [];

    /// <summary>Instead of <see cref="Models"/>: layer ranges stacked in order into a new model (passthrough).</summary>
    public IReadOnlyList<MergeSlice>? Slices { get; init; }

    /// <summary>Global parameters: method options (normalize, t, ...) and defaults for per-model ones (weight, ...).</summary>
    public IReadOnlyDictionary<string, ParameterSetting> Parameters { get; init; } = new Dictionary<string, ParameterSetting>();

    /// <summary>Output dtype when <see cref="OutDType"/> is absent (mergekit: the merge dtype). Merging itself runs in float32.</summary>
    public string? DType { get; init; }

    public string? OutDType { get; init; }

    /// <summary>Where tokenizer files come from: <c>base</c> (the default) or a model reference.</summary>
    public string? TokenizerSource { get; init; }

    /// <summary>LiNeS depth scaling of the merged task vector, on top of the method; null for none.</summary>
    public LinesConfig? Lines { get; init; }

    /// <summary>When set, the result is written as a LoRA adapter for the base model instead of full weights.</summary>
    public AdapterOutputConfig? AdapterOutput { get; init; }

    /// <summary>Folder of the YAML file: relative model paths not found from the working directory are tried there.</summary>
    public string? BaseDirectory { get; init; }
}

/// <summary>One entry of <c>models:</c>.</summary>
/// <param name="Model">A checkpoint folder or .safetensors file, a PEFT adapter folder, or <c>path+adapter</c>.</param>
/// <param name="SourceBase">
/// Fine-tuning transfer: the model this one was fine-tuned from, when it is not <see cref="MergeConfig.BaseModel"/>.
/// Its task vector is then <c>Model - SourceBase</c>, added to the (different) base model.
/// </param>
public sealed record MergeModel(string Model, IReadOnlyDictionary<string, ParameterSetting>? Parameters = null, string? SourceBase = null);

/// <summary>One entry of <c>slices:</c>: its source layers (passthrough takes exactly one) and parameters for them.</summary>
public sealed record MergeSlice(IReadOnlyList<SliceSource> Sources, IReadOnlyDictionary<string, ParameterSetting>? Parameters = null);

/// <summary>Layers <paramref name="Start"/> to <paramref name="End"/> (excluded) of <paramref name="Model"/>.</summary>
public sealed record SliceSource(string Model, int Start, int End, IReadOnlyDictionary<string, ParameterSetting>? Parameters = null);

/// <summary>LiNeS (https://arxiv.org/abs/2410.17146): a task vector at relative depth d is scaled by <c>alpha + beta * d</c>.</summary>
public sealed record LinesConfig(double Alpha, double Beta);

/// <summary>Re-factor the merged delta of each targeted weight by truncated SVD into a rank-<paramref name="R"/> LoRA.</summary>
/// <param name="TargetModules">Module names or suffixes (as PEFT's target_modules); null: those of the adapter inputs,
/// or every 2-D weight inside the layers when no input is an adapter.</param>
/// <param name="LoraAlpha">Written to adapter_config.json; the factors are scaled so that the delta is exact. Default: R.</param>
public sealed record AdapterOutputConfig(int R, double? LoraAlpha = null, IReadOnlyList<string>? TargetModules = null);

/// <summary>
/// A parameter value as mergekit accepts it: a scalar (number, bool or string); a gradient, a list of numbers
/// interpolated linearly over depth; or a list of <c>{filter, value}</c> alternatives where the first whose filter is
/// a substring of the tensor name (or is absent or <c>*</c>) applies.
/// </summary>
public sealed class ParameterSetting
{
    readonly object? scalar;
    readonly double[]? gradient;
    readonly string[]? choices;
    readonly (string? Filter, ParameterSetting Value)[]? conditions;
    readonly IReadOnlyDictionary<string, double>? byTensor;

    ParameterSetting(object? scalar, double[]? gradient, string[]? choices, (string?, ParameterSetting)[]? conditions,
        IReadOnlyDictionary<string, double>? byTensor = null)
    {
        this.scalar = scalar;
        this.gradient = gradient;
        this.choices = choices;
        this.conditions = conditions;
        this.byTensor = byTensor;
    }

    public static ParameterSetting Of(double value) => new(value, null, null, null);
    public static ParameterSetting Of(bool value) => new(value, null, null, null);
    public static ParameterSetting Of(string value) => new(value, null, null, null);
    public static ParameterSetting Gradient(params double[] values) =>
        values.Length > 0 ? new(null, values, null, null) : throw new ArgumentException("a gradient needs at least one value");
    public static ParameterSetting Choices(params string[] values) =>
        values.Length > 0 ? new(null, null, values, null) : throw new ArgumentException("a list of choices needs at least one value");
    public static ParameterSetting Conditional(params (string? Filter, ParameterSetting Value)[] conditions) => new(null, null, null, conditions);

    /// <summary>A value per tensor, by exact name (no YAML form: aTLAS writes its learned coefficients so); other tensors fall through.</summary>
    public static ParameterSetting PerTensor(IReadOnlyDictionary<string, double> values) => new(null, null, null, null, values);

    /// <summary>
    /// The value for a tensor at relative depth <paramref name="depth"/> in [0, 1] (see <see cref="LayerDepth"/>),
    /// or null when no filter matches (the lookup then falls through to the next level).
    /// </summary>
    public object? Evaluate(string tensorName, double depth)
    {
        if (scalar is not null) return scalar;
        if (byTensor is not null) return byTensor.TryGetValue(tensorName, out var v) ? (object)v : null;
        if (gradient is not null)
        {
            // mergekit: position depth * (n - 1) between neighbouring entries.
            double scaled = depth * (gradient.Length - 1);
            int i0 = (int)scaled, i1 = Math.Min(gradient.Length - 1, i0 + 1);
            double frac = scaled - i0;
            return (1 - frac) * gradient[i0] + frac * gradient[i1];
        }
        if (choices is not null) return choices[(int)(depth * (choices.Length - 1))];
        foreach (var (filter, value) in conditions!)
            if (filter is null or "*" || tensorName.Contains(filter, StringComparison.Ordinal))
                return value.Evaluate(tensorName, depth);
        return null;
    }

    public override string ToString() =>
        scalar?.ToString() ?? (byTensor is not null ? $"{{{byTensor.Count} tensors}}" : gradient is not null ? $"[{string.Join(", ", gradient)}]"
            : choices is not null ? $"[{string.Join(", ", choices)}]"
            : $"[{string.Join(", ", conditions!.Select(c => $"{{filter: {c.Filter ?? "*"}, value: {c.Value}}}"))}]");
}
