using System.Globalization;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace PeftSharp.Merging;

/// <summary>A merge that cannot be done as asked: the message names the key, tensor, model or file at fault.</summary>
public sealed class MergeException(string message) : Exception(message);

/// <summary>Reads mergekit's YAML (the <c>models:</c> form) into a <see cref="MergeConfig"/>.</summary>
public static class MergeConfigYaml
{
    static readonly string[] TopLevelKeys =
        ["merge_method", "base_model", "models", "slices", "parameters", "dtype", "out_dtype", "tokenizer_source", "lines", "adapter_output"];

    public static MergeConfig Load(string path)
    {
        if (!File.Exists(path)) throw new MergeException($"merge config not found: {path}");
        IO.RegularFile.Require(path);
        return Parse(File.ReadAllText(path), path) with { BaseDirectory = Path.GetDirectoryName(Path.GetFullPath(path)) };
    }

    public static MergeConfig Parse(string yaml, string source = "merge config")
    {
        var stream = new YamlStream();
        try { stream.Load(new StringReader(yaml)); }
        catch (YamlException e) { throw new MergeException($"{source} line {e.Start.Line}: not valid YAML ({e.Message})"); }
        if (stream.Documents.Count == 0 || stream.Documents[0].RootNode is not YamlMappingNode root)
            throw new MergeException($"{source}: expected a mapping with merge_method and models");
        var r = new Reader(source);

        foreach (var key in root.Children.Keys.Select(k => r.Text(k, "key")))
        {
            if (key is "modules" or "tokenizer" or "chat_template")
                throw new MergeException($"{source}: '{key}' is not supported yet; describe the merge with 'models:' (whole models)");
            if (!TopLevelKeys.Contains(key))
                throw new MergeException($"{source}: unknown key '{key}' (known: {string.Join(", ", TopLevelKeys)})");
        }
        var slices = r.Get(root, "slices") is { } sl ? r.Slices(sl) : null;
        var models = r.Get(root, "models") is YamlSequenceNode seq
            ? seq.Children.Select((n, i) => r.Model(n, $"models[{i}]")).ToList()
            : slices is not null ? new List<MergeModel>() : throw new MergeException($"{source}: 'models:' must list the models to merge (or 'slices:' the layers to stack)");
        if (slices is not null && models.Count > 0) throw new MergeException($"{source}: give either 'models:' or 'slices:', not both");
        return new MergeConfig
        {
            MergeMethod = r.Text(r.Get(root, "merge_method") ?? throw new MergeException($"{source}: 'merge_method' is required"), "merge_method"),
            BaseModel = r.OptionalText(root, "base_model"),
            Models = models,
            Slices = slices,
            Parameters = r.Parameters(r.Get(root, "parameters"), "parameters"),
            DType = r.OptionalText(root, "dtype"),
            OutDType = r.OptionalText(root, "out_dtype"),
            TokenizerSource = r.OptionalText(root, "tokenizer_source"),
            Lines = r.Get(root, "lines") is { } lines ? r.Lines(lines) : null,
            AdapterOutput = r.Get(root, "adapter_output") is { } ao ? r.AdapterOutput(ao) : null,
        };
    }

    sealed class Reader(string source)
    {
        Exception Error(YamlNode node, string what) => new MergeException($"{source} line {node.Start.Line}: {what}");

        public YamlNode? Get(YamlMappingNode map, string key) =>
            map.Children.TryGetValue(new YamlScalarNode(key), out var v) && !IsNull(v) ? v : null;

        static bool IsNull(YamlNode n) => n is YamlScalarNode { Value: null or "" or "~" or "null", Style: ScalarStyle.Plain };

        public string Text(YamlNode node, string what) =>
            node is YamlScalarNode { Value: { } v } ? v : throw Error(node, $"'{what}' must be a single value");

        public string? OptionalText(YamlMappingNode map, string key) => Get(map, key) is { } n ? Text(n, key) : null;

        public double Number(YamlNode node, string what) =>
            node is YamlScalarNode { Value: { } v } && double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out var d)
                ? d : throw Error(node, $"'{what}' must be a number");

        public MergeModel Model(YamlNode node, string where)
        {
            // mergekit also accepts a bare string as a model entry.
            if (node is YamlScalarNode) return new MergeModel(Text(node, where));
            if (node is not YamlMappingNode map) throw Error(node, $"{where} must be a mapping with 'model:'");
            foreach (var key in map.Children.Keys.Select(k => Text(k, "key")))
                if (key is not ("model" or "parameters" or "source_base"))
                    throw Error(map, $"{where}: unknown key '{key}' (known: model, parameters, source_base)");
            var model = Get(map, "model") ?? throw Error(map, $"{where}: 'model' is required");
            if (model is YamlMappingNode)
                throw Error(model, $"{where}.model: write the model as a path, or 'path+adapter_path' for a LoRA on top of it");
            return new MergeModel(Text(model, $"{where}.model"), Parameters(Get(map, "parameters"), $"{where}.parameters"),
                OptionalText(map, "source_base"));
        }

        public Dictionary<string, ParameterSetting> Parameters(YamlNode? node, string where)
        {
            var result = new Dictionary<string, ParameterSetting>();
            if (node is null) return result;
            if (node is not YamlMappingNode map) throw Error(node, $"'{where}' must be a mapping of name: value");
            foreach (var (k, v) in map.Children)
            {
                var name = Text(k, where);
                result[name] = Setting(v, $"{where}.{name}");
            }
            return result;
        }

        ParameterSetting Setting(YamlNode node, string where)
        {
            switch (node)
            {
                case YamlScalarNode s:
                    return Scalar(s, where);
                case YamlMappingNode m:
                    return ParameterSetting.Conditional(Condition(m, where));
                case YamlSequenceNode list when list.Children.Count == 0:
                    throw Error(node, $"'{where}' is an empty list");
                case YamlSequenceNode list when list.Children.All(c => c is YamlScalarNode):
                    var scalars = list.Children.Select(c => Scalar((YamlScalarNode)c, where)).ToList();
                    var numbers = scalars.Select(s => s.Evaluate("", 0)).OfType<double>().ToArray();
                    return numbers.Length == scalars.Count
                        ? ParameterSetting.Gradient(numbers)
                        : ParameterSetting.Choices(list.Children.Select(c => Text(c, where)).ToArray());
                case YamlSequenceNode list when list.Children.All(c => c is YamlMappingNode):
                    return ParameterSetting.Conditional(list.Children.Select(c => Condition((YamlMappingNode)c, where)).ToArray());
                default:
                    throw Error(node, $"'{where}' must be a value, a list of numbers (a gradient) or a list of {{filter, value}}");
            }
        }

        (string?, ParameterSetting) Condition(YamlMappingNode map, string where)
        {
            foreach (var key in map.Children.Keys.Select(k => Text(k, "key")))
                if (key is not ("filter" or "value")) throw Error(map, $"'{where}': unknown key '{key}' in a filtered value (known: filter, value)");
            var value = Get(map, "value") ?? throw Error(map, $"'{where}': a filtered entry needs 'value'");
            return (OptionalText(map, "filter"), Setting(value, where));
        }

        ParameterSetting Scalar(YamlScalarNode s, string where)
        {
            var v = s.Value ?? throw Error(s, $"'{where}' has no value");
            if (s.Style == ScalarStyle.Plain)
            {
                if (double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out var d)) return ParameterSetting.Of(d);
                if (v is "true" or "True" or "TRUE") return ParameterSetting.Of(true);
                if (v is "false" or "False" or "FALSE") return ParameterSetting.Of(false);
            }
            return ParameterSetting.Of(v);
        }

        /// <summary>mergekit's <c>slices: [{sources: [{model, layer_range: [start, end], parameters}], parameters}]</c>.</summary>
        public List<MergeSlice> Slices(YamlNode node)
        {
            if (node is not YamlSequenceNode list || list.Children.Count == 0) throw Error(node, "'slices' must list slices, each with sources");
            return list.Children.Select((n, i) =>
            {
                var where = $"slices[{i}]";
                if (n is not YamlMappingNode map) throw Error(n, $"{where} must be a mapping with 'sources:'");
                foreach (var key in map.Children.Keys.Select(k => Text(k, "key")))
                    if (key is not ("sources" or "parameters")) throw Error(map, $"{where}: unknown key '{key}' (known: sources, parameters)");
                if (Get(map, "sources") is not YamlSequenceNode sources || sources.Children.Count == 0)
                    throw Error(map, $"{where}: 'sources' must list {{model, layer_range}}");
                return new MergeSlice(sources.Children.Select((s, j) => SliceSource(s, $"{where}.sources[{j}]")).ToList(),
                    Parameters(Get(map, "parameters"), $"{where}.parameters"));
            }).ToList();
        }

        SliceSource SliceSource(YamlNode node, string where)
        {
            if (node is not YamlMappingNode map) throw Error(node, $"{where} must be a mapping {{model, layer_range}}");
            foreach (var key in map.Children.Keys.Select(k => Text(k, "key")))
                if (key is not ("model" or "layer_range" or "parameters")) throw Error(map, $"{where}: unknown key '{key}' (known: model, layer_range, parameters)");
            var model = Text(Get(map, "model") ?? throw Error(map, $"{where}: 'model' is required"), $"{where}.model");
            if (Get(map, "layer_range") is not YamlSequenceNode { Children.Count: 2 } range)
                throw Error(map, $"{where}: 'layer_range' must be [start, end] (end excluded)");
            double start = Number(range.Children[0], $"{where}.layer_range"), end = Number(range.Children[1], $"{where}.layer_range");
            if (start < 0 || end <= start || start != Math.Floor(start) || end != Math.Floor(end))
                throw Error(range, $"{where}: 'layer_range' [{start}, {end}] must be whole numbers with 0 <= start < end");
            return new SliceSource(model, (int)start, (int)end, Parameters(Get(map, "parameters"), $"{where}.parameters"));
        }

        public LinesConfig Lines(YamlNode node)
        {
            if (node is not YamlMappingNode map) throw Error(node, "'lines' must be a mapping {alpha, beta}");
            foreach (var key in map.Children.Keys.Select(k => Text(k, "key")))
                if (key is not ("alpha" or "beta")) throw Error(map, $"'lines': unknown key '{key}' (known: alpha, beta)");
            var alpha = Get(map, "alpha") ?? throw Error(map, "'lines' needs alpha (the scale of the first layer)");
            var beta = Get(map, "beta") ?? throw Error(map, "'lines' needs beta (added at the last layer)");
            return new LinesConfig(Number(alpha, "lines.alpha"), Number(beta, "lines.beta"));
        }

        public AdapterOutputConfig AdapterOutput(YamlNode node)
        {
            if (node is not YamlMappingNode map) throw Error(node, "'adapter_output' must be a mapping {r, lora_alpha, target_modules}");
            foreach (var key in map.Children.Keys.Select(k => Text(k, "key")))
                if (key is not ("r" or "lora_alpha" or "target_modules"))
                    throw Error(map, $"'adapter_output': unknown key '{key}' (known: r, lora_alpha, target_modules)");
            var rNode = Get(map, "r") ?? throw Error(map, "'adapter_output' needs r, the rank of the output LoRA");
            double r = Number(rNode, "adapter_output.r");
            if (r < 1 || r != Math.Floor(r)) throw Error(rNode, "'adapter_output.r' must be a positive integer");
            var targets = Get(map, "target_modules") switch
            {
                null => null,
                YamlSequenceNode s => s.Children.Select(c => Text(c, "adapter_output.target_modules")).ToList(),
                var other => (IReadOnlyList<string>)[Text(other, "adapter_output.target_modules")],
            };
            return new AdapterOutputConfig((int)r, Get(map, "lora_alpha") is { } a ? Number(a, "adapter_output.lora_alpha") : null, targets);
        }
    }
}
