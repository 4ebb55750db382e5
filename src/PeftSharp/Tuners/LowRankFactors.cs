namespace PeftSharp.Tuners;

/// <summary>
/// One adapted layer whose update is <c>Scaling * B @ A</c> (A: [r, in], B: [out, r]), named as the trainer names its
/// parameters: what optimizers built for low-rank factors (LoRA+, LoRA-FA, LoRA-Pro) need to know about a model.
/// <paramref name="Embedding"/> marks an embedding's factors (PEFT's <c>lora_embedding_A/B</c>).
/// </summary>
public sealed record LowRankFactors(string A, string B, double Scaling, bool Embedding);
