using System.CommandLine;
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
        var adapter = new Option<string>("--adapter") { Description = "PEFT adapter folder to apply" };
        var inputs = new Option<string>("--inputs") { Description = "safetensors with input_ids (int64 [B,T]) and optional attention_mask", Required = true };
        var output = new Option<string>("--out") { Description = "safetensors file to write 'logits' (float32) to", Required = true };
        var dtype = Options.DType();
        var device = Options.Device();
        var cmd = new Command("logits", "Run a model (and adapter) on input ids and write its logits") { model, adapter, inputs, output, dtype, device };
        cmd.SetAction(CliErrors.Guard(r =>
        {
            var (_, m) = Options.Load(r.GetValue(model)!, r.GetValue(adapter), Options.ParseDType(r.GetValue(dtype)!), Options.ParseDevice(r.GetValue(device)!));
            using var file = SafetensorsFile.Open(r.GetValue(inputs)!);
            if (!file.Contains("input_ids")) throw new InvalidDataException($"{file.Path}: no tensor named 'input_ids'");
            using var scope = NewDisposeScope();
            using var _ = no_grad();
            var ids = file.Load("input_ids").to(ScalarType.Int64).to(m.Device);
            var mask = file.Contains("attention_mask") ? file.Load("attention_mask").to(ScalarType.Int64).to(m.Device) : null;
            var logits = m.Forward(ModelInputs.Ids(ids, mask)).to(ScalarType.Float32).cpu();
            SafetensorsWriter.Save(r.GetValue(output)!, new Dictionary<string, Tensor> { ["logits"] = logits }, new Dictionary<string, string> { ["format"] = "pt" });
            Console.WriteLine($"wrote logits [{string.Join(",", logits.shape)}] to {r.GetValue(output)}");
            return 0;
        }));
        return cmd;
    }
}
