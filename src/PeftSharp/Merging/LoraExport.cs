using System.Text.Json;
using PeftSharp.IO;
using static TorchSharp.torch;

namespace PeftSharp.Merging;

/// <summary>
/// Writes merged deltas as a PEFT LoRA adapter: each targeted weight's delta is factored by truncated SVD,
/// <c>delta ~ U_r S_r Vh_r = (U_r S_r / scaling) @ Vh_r = B @ A * scaling</c>, the best rank-r approximation.
/// </summary>
public static class LoraExport
{
    /// <summary>
    /// Factors <paramref name="delta"/> [out, in] into <c>A</c> [r, in] and <c>B</c> [out, r] with
    /// <c>scaling * B @ A</c> its best rank-r approximation (zero-padded when the matrix has rank below r).
    /// </summary>
    public static (Tensor A, Tensor B) Factor(Tensor delta, int r, double scaling = 1.0)
    {
        if (delta.dim() != 2) throw new ArgumentException($"a LoRA delta is a matrix, got shape [{string.Join(",", delta.shape)}]", nameof(delta));
        using var scope = NewDisposeScope();
        var (u, s, vh) = linalg.svd(delta, fullMatrices: false);   // u [out, k], s [k], vh [k, in]
        long k = Math.Min(r, s.shape[0]);
        var b = zeros(delta.shape[0], r, dtype: delta.dtype);
        var a = zeros(r, delta.shape[1], dtype: delta.dtype);
        b.narrow(1, 0, k).copy_(u.narrow(1, 0, k) * s.narrow(0, 0, k) / scaling);
        a.narrow(0, 0, k).copy_(vh.narrow(0, 0, k));
        return (a.MoveToOuterDisposeScope(), b.MoveToOuterDisposeScope());
    }

    /// <summary>PEFT's list form of target_modules: a module matches a name equal to it or ending in "." + it.</summary>
    public static bool Matches(string module, IEnumerable<string> targets) =>
        targets.Any(t => module == t || module.EndsWith("." + t, StringComparison.Ordinal));

    internal sealed record Module(string Name, long Out, long In);

    /// <summary>
    /// The modules to write: those matching the configured targets, else the adapter inputs' targets, else every
    /// 2-D weight inside the layers (embeddings excluded: PEFT stores their LoRA differently).
    /// </summary>
    internal static List<Module> Modules(IEnumerable<string> tensorNames, Func<string, long[]> shape, Func<string, bool> isFloat,
        IReadOnlyList<string>? targets, bool fanInFanOut)
    {
        var result = new List<Module>();
        foreach (var name in tensorNames)
        {
            if (!name.EndsWith(".weight", StringComparison.Ordinal) || !isFloat(name)) continue;
            var module = name[..^".weight".Length];
            var s = shape(name);
            bool wanted = targets is not null ? Matches(module, targets)
                : s.Length == 2 && LayerDepth.LayerIndex(name) is not null && !name.Contains("embed", StringComparison.Ordinal);
            if (!wanted) continue;
            if (s.Length != 2)
                throw new MergeException($"adapter output: target '{module}' has a weight of shape [{string.Join(",", s)}]; only matrices can be factored into LoRA");
            if (name.Contains("embed", StringComparison.Ordinal))
                throw new MergeException($"adapter output: target '{module}' is an embedding, whose LoRA form is not written yet; leave it out of target_modules");
            result.Add(fanInFanOut ? new Module(module, s[1], s[0]) : new Module(module, s[0], s[1]));
        }
        if (result.Count == 0)
            throw new MergeException($"adapter output: no weight matches target_modules [{string.Join(", ", targets ?? [])}]");
        return result;
    }

    /// <summary>Streams the factored deltas into adapter_model.safetensors and writes adapter_config.json.</summary>
    internal static void Write(string folder, IReadOnlyList<Module> modules, Func<string, Tensor> deltaOf, AdapterOutputConfig config,
        bool fanInFanOut, string? taskType, string? baseModel, ScalarType dtype, Action<int, string>? progress)
    {
        double alpha = config.LoraAlpha ?? config.R, scaling = alpha / config.R;
        var specs = modules.SelectMany(m => new[]
        {
            new TensorSpec($"base_model.model.{m.Name}.lora_A.weight", dtype, [config.R, m.In]),
            new TensorSpec($"base_model.model.{m.Name}.lora_B.weight", dtype, [m.Out, config.R]),
        }).ToList();
        using (var writer = new SafetensorsStreamWriter(Path.Combine(folder, AdapterDelta.WeightsFile), specs,
                   new Dictionary<string, string> { ["format"] = "pt" }))
        {
            for (int i = 0; i < modules.Count; i++)
            {
                var m = modules[i];
                progress?.Invoke(i, m.Name);
                using (var scope = NewDisposeScope())
                {
                    var delta = deltaOf(m.Name + ".weight");            // stored layout: [in, out] for fan_in_fan_out
                    var (a, b) = Factor(fanInFanOut ? delta.t() : delta, config.R, scaling);
                    writer.Write(specs[2 * i].Name, a.to(dtype));
                    writer.Write(specs[2 * i + 1].Name, b.to(dtype));
                }
                Native.Malloc.Trim();
            }
            writer.Commit();
        }
        var adapterConfig = new Dictionary<string, object?>
        {
            ["peft_type"] = "LORA", ["task_type"] = taskType, ["base_model_name_or_path"] = baseModel,
            ["r"] = config.R, ["lora_alpha"] = alpha, ["target_modules"] = modules.Select(m => m.Name).ToList(),
            ["fan_in_fan_out"] = fanInFanOut, ["use_rslora"] = false, ["use_dora"] = false, ["bias"] = "none",
            ["lora_dropout"] = 0.0, ["modules_to_save"] = null, ["rank_pattern"] = new Dictionary<string, int>(),
            ["alpha_pattern"] = new Dictionary<string, double>(), ["init_lora_weights"] = true, ["inference_mode"] = true,
            ["layers_to_transform"] = null, ["layers_pattern"] = null, ["revision"] = null,
        };
        AtomicFile.WriteAllText(Path.Combine(folder, AdapterDelta.ConfigFile),
            JsonSerializer.Serialize(adapterConfig, new JsonSerializerOptions { WriteIndented = true }));
    }
}
