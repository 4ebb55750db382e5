namespace PeftSharp.Training;

/// <summary>
/// What torch keeps per parameter group: the factor applied to the scheduled learning rate, and the decoupled weight decay.
/// LoRA+ gives B a larger factor and biases and LayerNorm weights no decay.
/// </summary>
public sealed record ParamSettings(double LrScale, double WeightDecay);
