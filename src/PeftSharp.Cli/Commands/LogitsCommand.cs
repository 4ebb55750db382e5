using System.CommandLine;
using PeftSharp.Generation.Composition;
using PeftSharp.IO;
using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Cli.Commands;

/// <summary><c>peftsharp logits</c>: the parity tool. Reads input_ids (+ attention_mask), writes float32 logits.</summary>
internal static class LogitsCommand
{
    public static Command Create()
    {
        var model = Options.Model();
        var adapter = AdapterSet.Option();
        var rowAdapters = AdapterSet.RowsOption("row of --inputs");
        var inputs = new Option<string>("--inputs") { Description = "safetensors file with input_ids (integers, [batch, length]) and optionally attention_mask (0/1, the same shape)", Required = true }.Help(value: "<file>");
        var output = new Option<string>("--out") { Description = "safetensors file to write 'logits' (float32 [batch, length, vocabulary]) to, and with --dynamic-fusion 'fusion_weights' ([batch, length, experts])", Required = true }.Help(value: "<file>");
        var dtype = Options.DType();
        var device = Options.Device();
        var taskId = TaskRouting.Option();
        var cmd = new Command("logits", "Run a model (and adapter) on input ids and write its logits") { model, adapter, rowAdapters, inputs, output, dtype, device, taskId };
        var proxy = new ProxyOptions();
        proxy.AddTo(cmd);
        cmd.SetAction(r =>
        {
            var modelDir = r.GetValue(model)!;
            var adapters = AdapterSet.Parse(r.GetValue(adapter), r.GetValue(rowAdapters));
            var config = ModelConfig.Load(modelDir);
            bool proxied = proxy.Check(r, modelDir, config);
            using var file = SafetensorsFile.Open(r.GetValue(inputs)!);
            using var scope = NewDisposeScope();
            // The inputs are checked before the weights load: a bad id would otherwise surface as libtorch's "index out of range".
            var (ids, mask) = ReadInputs(file, config.VocabSize, modelDir);
            adapters.CheckRows((int)ids.shape[0], $"{r.GetValue(inputs)} (input_ids)");
            var m = adapters.Load(modelDir, r.GetValue(dtype), Options.ParseDevice(r.GetValue(device)!));
            using var tasks = TaskRouting.Use(m, r.GetValue(taskId), (int)ids.shape[0]);
            var scorer = proxied ? proxy.Wrap(r, m, r.GetValue(dtype), m.Device) : m; // the combined scores, whose log-softmax is decoded
            using var _ = no_grad();
            var written = new Dictionary<string, Tensor>();
            if (scorer is DynamicLogitFusion fusion) fusion.Observer = w => written["fusion_weights"] = w.to(ScalarType.Float32).MoveToOuterDisposeScope(); // w dies with the forward's scope
            written["logits"] = adapters.Run(m, () => scorer.Forward(ModelInputs.Ids(ids.to(m.Device), mask?.to(m.Device)))).to(ScalarType.Float32).cpu();
            var logits = written["logits"];
            SafetensorsWriter.Save(r.GetValue(output)!, written, new Dictionary<string, string> { ["format"] = "pt" });
            r.InvocationConfiguration.Output.WriteLine($"wrote logits [{string.Join(",", logits.shape)}] to {r.GetValue(output)}");
            return 0;
        });
        return cmd;
    }

    static readonly ScalarType[] Integers = [ScalarType.Int64, ScalarType.Int32, ScalarType.Int16, ScalarType.Int8, ScalarType.Byte];

    /// <summary>input_ids [B, T] of integers in the vocabulary, and an attention mask of 0/1 of the same shape.</summary>
    internal static (Tensor Ids, Tensor? Mask) ReadInputs(SafetensorsFile file, int vocabSize, string modelDir)
    {
        if (!file.Contains("input_ids")) throw new InvalidDataException($"{file.Path}: no tensor named 'input_ids'");
        var info = file.Info("input_ids");
        if (!Integers.Contains(info.DType))
            throw new InvalidDataException($"{file.Path}: input_ids is {info.DType.ToString().ToLowerInvariant()}; token ids must be integers (int64)");
        if (info.Shape.Length != 2 || info.Shape[1] == 0)
            throw new InvalidDataException($"{file.Path}: input_ids has shape [{string.Join(",", info.Shape)}]; it must be [batch, length] with length >= 1 (one sequence of n ids: [1, n])");
        var ids = file.Load("input_ids").to(ScalarType.Int64);
        if (ids.numel() > 0)
        {
            Options.CheckTokenIds($"{file.Path}: input_ids", [ids.min().item<long>(), ids.max().item<long>()], vocabSize, modelDir);
        }
        if (!file.Contains("attention_mask")) return (ids, null);
        var maskInfo = file.Info("attention_mask");
        if (!Integers.Contains(maskInfo.DType) && maskInfo.DType != ScalarType.Bool)
            throw new InvalidDataException($"{file.Path}: attention_mask is {maskInfo.DType.ToString().ToLowerInvariant()}; it must hold integers 0 and 1");
        if (!maskInfo.Shape.SequenceEqual(info.Shape))
            throw new InvalidDataException($"{file.Path}: attention_mask has shape [{string.Join(",", maskInfo.Shape)}] but input_ids has [{string.Join(",", info.Shape)}]; they must match");
        var mask = file.Load("attention_mask").to(ScalarType.Int64);
        if (mask.numel() > 0 && (mask.min().item<long>() < 0 || mask.max().item<long>() > 1))
            throw new InvalidDataException($"{file.Path}: attention_mask must hold only 0 and 1");
        return (ids, mask);
    }
}
