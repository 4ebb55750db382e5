using System.CommandLine;
using PeftSharp.Models;
using PeftSharp.Peft;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Cli;

/// <summary>Options several commands share, and the model loading they imply.</summary>
internal static class Options
{
    public static Option<string> Model(bool required = true) => new("--model")
    {
        Description = "Hugging Face model folder (config.json + safetensors)" + (required ? "" : "; default: the bundled tinycode-3m"),
        Required = required,
    };

    public static Option<string[]> Adapter() => new("--adapter")
    {
        Description = "PEFT adapter folder (adapter_config.json + adapter_model.safetensors); repeatable where it makes sense",
        AllowMultipleArgumentsPerToken = false,
    };

    public static Option<string> DType() => new("--dtype")
    {
        Description = "weights dtype: float32 or bfloat16",
        DefaultValueFactory = _ => "float32",
    };

    public static Option<string> Device() => new("--device")
    {
        Description = Devices.Help,
        DefaultValueFactory = _ => "auto",
    };

    public static ScalarType ParseDType(string s) => s.ToLowerInvariant() switch
    {
        "float32" or "fp32" or "f32" => ScalarType.Float32,
        "bfloat16" or "bf16" => ScalarType.BFloat16,
        "float16" or "fp16" or "f16" => ScalarType.Float16,
        _ => throw new ArgumentException($"--dtype '{s}' is not one of float32, bfloat16, float16"),
    };

    public static Device ParseDevice(string s) => Devices.Parse(s);

    /// <summary>The bundled default model, next to the executable.</summary>
    public static string BundledModel => Path.Combine(AppContext.BaseDirectory, "models", "tinycode-3m");

    /// <summary>A base model, with the adapter applied when one is given.</summary>
    public static (PretrainedModel Base, ILanguageModel Model) Load(string modelDir, string? adapterDir, ScalarType dtype, Device device)
    {
        var model = AutoModel.Load(modelDir, dtype, device);
        if (adapterDir is null) return (model, model);
        return (model, PeftModel.FromPretrained(model, adapterDir));
    }
}
