namespace PeftSharp.Training;

/// <summary>
/// Every option of a training run, as plain data. Names are transformers' <c>TrainingArguments</c> (and TRL's
/// <c>SFTConfig</c> for data options) in snake_case; the config file uses the same keys, and the command line the same
/// names in kebab-case (<c>--learning-rate</c>). Defaults suit LoRA on a small model for a first run:
/// they are not transformers' full-fine-tuning defaults where those would be wrong for an adapter.
/// </summary>
public sealed record TrainingOptions
{
    // ---- model and adapter (read by whoever builds the model; the trainer itself does not use them)
    /// <summary>Base model folder; null means the bundled models/tinycode-3m.</summary>
    public string? Model { get; init; }
    /// <summary>Start from this PEFT adapter folder instead of a fresh LoRA.</summary>
    public string? InitAdapter { get; init; }
    /// <summary>causal_lm or seq_cls (PEFT's task types).</summary>
    public string Task { get; init; } = "causal_lm";
    /// <summary>Tuning method: "lora" or another registered method's name (see <c>peftsharp train --help</c>).</summary>
    public string Method { get; init; } = "lora";
    /// <summary>LoRA variants: rsLoRA scaling alpha/sqrt(r), and DoRA.</summary>
    public bool UseRslora { get; init; }
    public bool UseDora { get; init; }
    public int LoraR { get; init; } = 8;
    public double LoraAlpha { get; init; } = 16;
    public double LoraDropout { get; init; } = 0.05;
    /// <summary>Module names to adapt, or "all-linear" (every linear layer but the output head).</summary>
    public string[] LoraTargetModules { get; init; } = ["all-linear"];
    /// <summary>LISA: how many decoder layers train at a time (besides embeddings and head).</summary>
    public int LisaActiveLayers { get; init; } = 2;
    /// <summary>LISA and HFT: re-sample the trained layers (HFT: the frozen half) every this many steps.</summary>
    public int LisaInterval { get; init; } = 5;
    /// <summary>Keep base weights and activations in bfloat16 (adapter weights, optimizer state and the loss stay float32).</summary>
    public bool Bf16 { get; init; }
    /// <summary>Recompute each decoder layer's activations in the backward pass: less memory, about a third more compute.</summary>
    public bool GradientCheckpointing { get; init; }
    /// <summary>auto (CUDA when available), cpu, cuda or cuda:N.</summary>
    public string Device { get; init; } = "auto";

    // ---- data
    /// <summary>Training data: .jsonl/.json/.csv/.parquet/text file or a folder; null means the bundled first-run data.</summary>
    public string? TrainFile { get; init; }
    public string? EvalFile { get; init; }
    /// <summary>Share of the training records held out when there is no eval file.</summary>
    public double EvalRatio { get; init; } = 0.1;
    public int MaxLength { get; init; } = 256;
    public bool Packing { get; init; }
    public bool CompletionOnlyLoss { get; init; } = true;
    public bool AssistantOnlyLoss { get; init; } = true;
    public bool SkipBadRecords { get; init; }
    public string DatasetTextField { get; init; } = "text";
    public string LabelColumn { get; init; } = "label";

    // ---- optimisation
    /// <summary>Higher than transformers' 5e-5: adapters start at zero and need larger steps.</summary>
    public double LearningRate { get; init; } = 5e-4;
    public int PerDeviceTrainBatchSize { get; init; } = 8;
    public int PerDeviceEvalBatchSize { get; init; } = 8;
    public int GradientAccumulationSteps { get; init; } = 1;
    public double NumTrainEpochs { get; init; } = 1;
    /// <summary>When positive, the run length in optimizer steps, overriding <see cref="NumTrainEpochs"/>.</summary>
    public int MaxSteps { get; init; } = -1;
    /// <summary>
    /// Warmup in optimizer steps. Null (not given) defers to <see cref="WarmupRatio"/>; any value given, 0 included, wins
    /// over it, so a typed <c>--warmup-steps 0</c> means no warmup. (transformers reads 0 as "unset", harmless there
    /// because its ratio defaults to 0; ours does not.)
    /// </summary>
    public int? WarmupSteps { get; init; }
    /// <summary>Used when <see cref="WarmupSteps"/> is not given: warmup = ceil(ratio * total steps), as transformers does.</summary>
    public double WarmupRatio { get; init; } = 0.05;
    /// <summary>constant, constant_with_warmup, linear or cosine.</summary>
    public string LrSchedulerType { get; init; } = "cosine";
    public double WeightDecay { get; init; }
    public double AdamBeta1 { get; init; } = 0.9;
    public double AdamBeta2 { get; init; } = 0.999;
    public double AdamEpsilon { get; init; } = 1e-8;
    public bool Amsgrad { get; init; }
    /// <summary>
    /// adamw_torch_fused (flat buffers: a few kernels a step), adamw_torch (one update per parameter, as PyTorch's
    /// for-loop AdamW), or auto: fused unless the method changes its trainable set as it goes (LISA, HFT).
    /// </summary>
    public string Optim { get; init; } = "auto";
    /// <summary>Gradients are clipped to this global L2 norm; 0 turns clipping off.</summary>
    public double MaxGradNorm { get; init; } = 1.0;
    public long Seed { get; init; } = 42;
    public bool Shuffle { get; init; } = true;

    // ---- output
    public string? OutputDir { get; init; } = "peftsharp-output";
    /// <summary>Evaluate every this many steps (0: only before and after training).</summary>
    public int EvalSteps { get; init; }
    /// <summary>Write checkpoint-&lt;step&gt;/ every this many steps (0: none, only the final adapter).</summary>
    public int SaveSteps { get; init; }
    /// <summary>Keep only the newest this many checkpoints (0: keep all).</summary>
    public int SaveTotalLimit { get; init; }
    /// <summary>Plain-text progress prints one line every this many steps.</summary>
    public int LoggingSteps { get; init; } = 10;
    /// <summary>
    /// Start over in an <see cref="OutputDir"/> that already holds a run (checkpoints or metrics): its checkpoints and
    /// metrics are deleted first. Without it such a folder is refused unless resuming, as transformers' example scripts
    /// refuse a non-empty output_dir without <c>--overwrite_output_dir</c>.
    /// </summary>
    public bool OverwriteOutputDir { get; init; }
    /// <summary>"latest" (or "true") resumes from the newest checkpoint in <see cref="OutputDir"/>; else a checkpoint folder.</summary>
    public string? ResumeFromCheckpoint { get; init; }
    /// <summary>A prompt for the before/after sample; null picks the start of a held-out example.</summary>
    public string? SamplePrompt { get; init; }
    public int SampleMaxNewTokens { get; init; } = 48;

    /// <summary>
    /// The data half of these options, for <see cref="Data.TrainingDataset.Load"/>. <paramref name="defaultTrainPath"/>
    /// (the bundled first-run data, say) is used when <see cref="TrainFile"/> is not set.
    /// </summary>
    public Data.DataOptions DataOptions(string? defaultTrainPath = null) => new()
    {
        TrainPath = TrainFile ?? defaultTrainPath ?? throw new ArgumentException("option train_file is not set"),
        EvalPath = EvalFile,
        EvalRatio = EvalRatio,
        Seed = Seed,
        MaxLength = MaxLength,
        Packing = Packing,
        CompletionOnlyLoss = CompletionOnlyLoss,
        AssistantOnlyLoss = AssistantOnlyLoss,
        SkipBadRecords = SkipBadRecords,
        TextField = DatasetTextField,
        LabelField = Task == "seq_cls" ? LabelColumn : null,
    };

    /// <summary>Checks ranges and names; the message names the option and what it accepts.</summary>
    public TrainingOptions Validate()
    {
        Check(LearningRate > 0 && double.IsFinite(LearningRate), "learning_rate", "must be a positive number");
        Check(PerDeviceTrainBatchSize >= 1, "per_device_train_batch_size", "must be at least 1");
        Check(PerDeviceEvalBatchSize >= 1, "per_device_eval_batch_size", "must be at least 1");
        Check(GradientAccumulationSteps >= 1, "gradient_accumulation_steps", "must be at least 1");
        Check(MaxSteps > 0 || NumTrainEpochs > 0, "num_train_epochs", "must be positive (or set max_steps)");
        Check(WarmupSteps is null or >= 0, "warmup_steps", "must not be negative");
        Check(WarmupRatio is >= 0 and < 1, "warmup_ratio", "must be in [0, 1)");
        Check(LrSchedule.Types.Contains(LrSchedulerType), "lr_scheduler_type", $"must be one of {string.Join(", ", LrSchedule.Types)}");
        Check(WeightDecay >= 0, "weight_decay", "must not be negative");
        Check(AdamBeta1 is >= 0 and < 1 && AdamBeta2 is >= 0 and < 1, "adam_beta1/adam_beta2", "must be in [0, 1)");
        Check(AdamEpsilon >= 0, "adam_epsilon", "must not be negative");
        Check(Optim is "auto" or "adamw_torch" or "adamw_torch_fused", "optim", "must be auto, adamw_torch or adamw_torch_fused");
        Check(MaxGradNorm >= 0, "max_grad_norm", "must not be negative (0 turns clipping off)");
        Check(MaxLength >= 2, "max_length", "must be at least 2");
        Check(EvalRatio is >= 0 and < 1, "eval_ratio", "must be in [0, 1)");
        Check(EvalSteps >= 0 && SaveSteps >= 0 && SaveTotalLimit >= 0 && LoggingSteps >= 0, "eval_steps/save_steps/save_total_limit/logging_steps", "must not be negative");
        Check(Task is "causal_lm" or "seq_cls", "task", "must be causal_lm or seq_cls");
        Check(!(Packing && Task == "seq_cls"), "packing", "applies to causal_lm only");
        Check(LoraR >= 1, "lora_r", "must be at least 1");
        Check(LisaActiveLayers >= 1, "lisa_active_layers", "must be at least 1");
        Check(LisaInterval >= 1, "lisa_interval", "must be at least 1");
        return this;

        static void Check(bool ok, string name, string rule)
        {
            if (!ok) throw new ArgumentException($"option {name} {rule}");
        }
    }
}
