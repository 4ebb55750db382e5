namespace PeftSharp.Tuners.Bottleneck;

/// <summary>
/// Bottleneck adapters: a small MLP h -> up(act(down(h))) with a zero-initialised up-projection, so the model starts
/// unchanged. Not a PEFT method: peft_type "BOTTLENECK_ADAPTER" is ours; the file layout is PEFT's
/// (<c>adapter_down.weight</c>, <c>adapter_up.weight</c>, ... per wrapped module).
/// <list type="bullet">
/// <item>"sequential" (Houlsby et al., 2019, https://arxiv.org/abs/1902.00751): y = f(x) + s * up(act(down(f(x)))),
/// after the attention output projection and after the feed-forward block.</item>
/// <item>"parallel" (He et al., 2022, "Towards a Unified View of Parameter-Efficient Transfer Learning",
/// https://arxiv.org/abs/2110.04366): y = f(x) + s * up(act(down(x))), beside the wrapped module. With s != 1 this is
/// their scaled parallel adapter (s = 4 in the paper) and AdaptFormer's (Chen et al., 2022, s = 0.1 beside the MLP).</item>
/// </list>
/// The parallel branch reads the wrapped module's input: for the MLP block that is He et al.'s feed-forward input;
/// for an output projection (o_proj, c_proj, dense) it is that projection's input, the attention context.
/// </summary>
public sealed record BottleneckConfig : LayerTunerConfig
{
    public override string PeftType => "BOTTLENECK_ADAPTER";
    /// <summary>"sequential" or "parallel".</summary>
    public string AdapterType { get; init; } = "sequential";
    /// <summary>Where adapters go when target_modules is null: "attention" (output projection), "ffn" (MLP block) or "both".</summary>
    public string Placement { get; init; } = "both";
    /// <summary>Bottleneck width = output features / reduction_factor (at least 1); 16 as in Pfeiffer et al. (2020).</summary>
    public int ReductionFactor { get; init; } = 16;
    /// <summary>"relu", "gelu" or "silu".</summary>
    public string NonLinearity { get; init; } = "relu";
    /// <summary>s in y = f(x) + s * adapter(.).</summary>
    public double Scaling { get; init; } = 1.0;
    public double AdapterDropout { get; init; }

    /// <summary>The modules <see cref="Placement"/> names in a model_type, as a full-match regex.</summary>
    public static string PlacementPattern(string modelType, string placement)
    {
        var (attention, ffn) = modelType switch
        {
            "llama" or "mistral" or "qwen2" or "qwen3" or "gemma2" or "gemma3_text" or "phi3" => (@".*\.self_attn\.o_proj", @".*\.mlp"),
            "gpt2" => (@".*\.attn\.c_proj", @".*\.mlp"),
            // BERT: "output.dense" ends both sub-layers; the FFN's is the layer's own output.
            "bert" => (@".*\.attention\.output\.dense", @".*\.layer\.\d+\.output\.dense"),
            _ => throw new NotSupportedException($"BOTTLENECK_ADAPTER has no placement for model_type '{modelType}'; set target_modules"),
        };
        return placement switch
        {
            "attention" => attention,
            "ffn" => ffn,
            "both" => $"{attention}|{ffn}",
            _ => throw new ArgumentException($"BOTTLENECK_ADAPTER: placement '{placement}' is not attention, ffn or both"),
        };
    }
}
