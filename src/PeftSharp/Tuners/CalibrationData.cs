using PeftSharp.Data;
using static TorchSharp.torch;

namespace PeftSharp.Tuners;

/// <summary>
/// What a data-aware initialisation (EVA, CorDA, LoRA-GA) sees before training: the calibration batches, in order,
/// and the model's loss on one batch (running it is the forward pass; its backward gives gradients of the base).
/// </summary>
/// <param name="Loss">the training objective of the adapted model on a batch, as the trainer computes it.</param>
public sealed record CalibrationData(IReadOnlyList<Batch> Batches, Func<Batch, Tensor> Loss);
