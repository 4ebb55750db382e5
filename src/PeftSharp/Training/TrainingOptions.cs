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
    /// <summary>Base model folder (Hugging Face layout: config.json, safetensors, tokenizer.json); unset: the bundled tinycode-3m.</summary>
    public string? Model { get; init; }
    /// <summary>Continue training this PEFT adapter folder instead of creating a new adapter.</summary>
    public string? InitAdapter { get; init; }
    /// <summary>
    /// A PEFT <c>adapter_config.json</c> (or ours) as the recipe for a new adapter, every method setting under PEFT's
    /// own names; it replaces <see cref="Method"/>. Adapter flags that differ from their defaults (lora_r, lora_alpha,
    /// lora_dropout, lora_target_modules, use_rslora, use_dora) override the keys they name.
    /// </summary>
    public string? AdapterConfig { get; init; }
    /// <summary>causal_lm (next-token prediction) or seq_cls (sequence classification), as PEFT's task types.</summary>
    public string Task { get; init; } = "causal_lm";
    /// <summary>Tuning method.</summary>
    public string Method { get; init; } = "lora";
    /// <summary>rsLoRA: scale the LoRA update by alpha/sqrt(r) instead of alpha/r.</summary>
    public bool UseRslora { get; init; }
    /// <summary>DoRA: train a magnitude vector beside the LoRA direction update.</summary>
    public bool UseDora { get; init; }
    /// <summary>Rank r of the adapter (LoRA and the methods that have a rank).</summary>
    public int LoraR { get; init; } = 8;
    /// <summary>LoRA's alpha: the update is scaled by alpha/r.</summary>
    public double LoraAlpha { get; init; } = 16;
    /// <summary>Dropout on the adapter's input during training, in [0, 1).</summary>
    public double LoraDropout { get; init; } = 0.05;
    /// <summary>Module names to adapt, comma-separated, or all-linear (every linear layer but the output head).</summary>
    public string[] LoraTargetModules { get; init; } = ["all-linear"];
    /// <summary>
    /// Data-aware inits (eva, corda, corda-kpm, lora-ga) calibrate on the first this many training micro-batches, in
    /// training order, before the first step: EVA's incremental PCA cycles over them until its components settle,
    /// CorDA averages its input covariance and LoRA-GA its gradient estimate over them.
    /// </summary>
    public int InitBatches { get; init; } = 16;
    /// <summary>LISA: how many decoder layers train at a time (besides embeddings and head).</summary>
    public int LisaActiveLayers { get; init; } = 2;
    /// <summary>LISA and HFT: re-sample the trained layers (HFT: the frozen half) every this many steps.</summary>
    public int LisaInterval { get; init; } = 5;
    /// <summary>Sparse fine-tuning (spiel, lt-sft, lift, random-mask, magnitude): share of each target weight's entries that may change, in (0, 1].</summary>
    public double Density { get; init; } = 0.01;
    /// <summary>Sparse fine-tuning: re-choose the trained entries every this many steps (SpIEL's regrowth, LIFT's mask refresh); 0: never.</summary>
    public int SparseReselectionSteps { get; init; } = 20;

    // ---- precision, memory and device
    /// <summary>Keep base weights and activations in bfloat16 (adapter weights, optimizer state and the loss stay float32).</summary>
    public bool Bf16 { get; init; }
    /// <summary>Recompute each decoder layer's activations in the backward pass: less memory, about a third more compute.</summary>
    public bool GradientCheckpointing { get; init; }
    /// <summary>Where to train: auto (CUDA when usable, else CPU), cpu, cuda or cuda:N.</summary>
    public string Device { get; init; } = "auto";

    // ---- data
    /// <summary>Training data: a .jsonl, .json, .csv, .parquet or text file, or a folder of text files; unset: the bundled JavaScript.</summary>
    public string? TrainFile { get; init; }
    /// <summary>Held-out data in the same formats; unset: <see cref="EvalRatio"/> of the training records are held out.</summary>
    public string? EvalFile { get; init; }
    /// <summary>Share of the training records held out when there is no eval file, in [0, 1).</summary>
    public double EvalRatio { get; init; } = 0.1;
    /// <summary>Longest row in tokens; longer records are truncated (or split, with packing).</summary>
    public int MaxLength { get; init; } = 256;
    /// <summary>Concatenate records and cut the stream into rows of max length, so no row is padding.</summary>
    public bool Packing { get; init; }
    /// <summary>For prompt/completion records, train on the completion only (the prompt's tokens get no loss).</summary>
    public bool CompletionOnlyLoss { get; init; } = true;
    /// <summary>For chat records, train on the assistant's turns only.</summary>
    public bool AssistantOnlyLoss { get; init; } = true;
    /// <summary>Skip records that cannot be read (reporting how many) instead of stopping at the first.</summary>
    public bool SkipBadRecords { get; init; }
    /// <summary>Field that holds a record's text in .jsonl, .json, .csv and .parquet data.</summary>
    public string DatasetTextField { get; init; } = "text";
    /// <summary>Field that holds the class label, for seq_cls.</summary>
    public string LabelColumn { get; init; } = "label";

    // ---- optimisation
    /// <summary>Peak learning rate. Higher than transformers' 5e-5: adapters start at zero and need larger steps.</summary>
    public double LearningRate { get; init; } = 5e-4;
    /// <summary>Rows per micro-batch.</summary>
    public int PerDeviceTrainBatchSize { get; init; } = 8;
    /// <summary>Rows per micro-batch when evaluating.</summary>
    public int PerDeviceEvalBatchSize { get; init; } = 8;
    /// <summary>Micro-batches whose gradients add up to one optimizer step.</summary>
    public int GradientAccumulationSteps { get; init; } = 1;
    /// <summary>Passes over the training data (fractions allowed).</summary>
    public double NumTrainEpochs { get; init; } = 1;
    /// <summary>When positive, the run length in optimizer steps, overriding <see cref="NumTrainEpochs"/>.</summary>
    public int MaxSteps { get; init; } = -1;
    /// <summary>
    /// Steps of linear warmup from 0 to the learning rate. Unset defers to <see cref="WarmupRatio"/>; any value given,
    /// 0 included, wins over it.
    /// </summary>
    // transformers reads 0 as "unset", harmless there because its ratio defaults to 0; ours does not.
    public int? WarmupSteps { get; init; }
    /// <summary>Used when <see cref="WarmupSteps"/> is not given: warmup = ceil(ratio * total steps), as transformers does.</summary>
    public double WarmupRatio { get; init; } = 0.05;
    /// <summary>Learning-rate schedule after warmup: constant, constant_with_warmup, linear or cosine.</summary>
    public string LrSchedulerType { get; init; } = "cosine";
    /// <summary>AdamW's decoupled weight decay.</summary>
    public double WeightDecay { get; init; }
    /// <summary>AdamW's decay rate of the gradient's running mean.</summary>
    public double AdamBeta1 { get; init; } = 0.9;
    /// <summary>AdamW's decay rate of the squared gradient's running mean.</summary>
    public double AdamBeta2 { get; init; } = 0.999;
    /// <summary>AdamW's epsilon, added to the denominator.</summary>
    public double AdamEpsilon { get; init; } = 1e-8;
    /// <summary>Use AMSGrad's running maximum of the squared gradient.</summary>
    public bool Amsgrad { get; init; }
    /// <summary>
    /// adamw_torch_fused (flat buffers: a few kernels a step), adamw_torch (one update per parameter, as PyTorch's
    /// for-loop AdamW), or auto: fused unless the method changes its trainable set as it goes (LISA, HFT). For LoRA:
    /// loraplus (B learns loraplus_lr_ratio times faster than A), lorafa (A frozen, B's gradient projected) or lorapro
    /// (both gradients adjusted to approximate full fine-tuning's, Adam on the equivalent full-size gradient).
    /// </summary>
    public string Optim { get; init; } = "auto";
    /// <summary>LoRA+: B's learning rate over A's (the paper suggests 2 to 16, larger for harder tasks).</summary>
    public double LoraplusLrRatio { get; init; } = 16;
    /// <summary>LoRA+: learning rate of LoRA factors on embedding layers (scheduled like the others).</summary>
    public double LoraplusLrEmbedding { get; init; } = 1e-6;
    /// <summary>Gradients are clipped to this global L2 norm; 0 turns clipping off.</summary>
    public double MaxGradNorm { get; init; } = 1.0;
    /// <summary>Seed of the adapter's initialisation, the data split and shuffling, and dropout.</summary>
    public long Seed { get; init; } = 42;
    /// <summary>Shuffle the training rows each epoch.</summary>
    public bool Shuffle { get; init; } = true;

    // ---- output, evaluation and checkpoints
    /// <summary>Folder for the adapter, checkpoints, metrics and loss curve.</summary>
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
    /// <summary>Prompt for the before/after sample; unset: the start of a held-out record.</summary>
    public string? SamplePrompt { get; init; }
    /// <summary>Tokens the before/after sample generates.</summary>
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
        Check(Optim is "auto" or "adamw_torch" or "adamw_torch_fused" or "loraplus" or "lorafa" or "lorapro", "optim",
            "must be auto, adamw_torch, adamw_torch_fused, loraplus, lorafa or lorapro");
        Check(LoraplusLrRatio > 0 && double.IsFinite(LoraplusLrRatio), "loraplus_lr_ratio", "must be a positive number");
        Check(LoraplusLrEmbedding > 0 && double.IsFinite(LoraplusLrEmbedding), "loraplus_lr_embedding", "must be a positive number");
        Check(!(Optim == "lorapro" && Amsgrad), "amsgrad", "is not supported by optim lorapro (its moments are of the full weight)");
        Check(MaxGradNorm >= 0, "max_grad_norm", "must not be negative (0 turns clipping off)");
        Check(MaxLength >= 2, "max_length", "must be at least 2");
        Check(EvalRatio is >= 0 and < 1, "eval_ratio", "must be in [0, 1)");
        Check(EvalSteps >= 0 && SaveSteps >= 0 && SaveTotalLimit >= 0 && LoggingSteps >= 0, "eval_steps/save_steps/save_total_limit/logging_steps", "must not be negative");
        Check(Task is "causal_lm" or "seq_cls", "task", "must be causal_lm or seq_cls");
        Check(!(Packing && Task == "seq_cls"), "packing", "applies to causal_lm only");
        Check(LoraR >= 1, "lora_r", "must be at least 1");
        Check(double.IsFinite(LoraAlpha), "lora_alpha", "must be a number");
        Check(LoraDropout is >= 0 and < 1, "lora_dropout", "must be in [0, 1)");
        Check(Methods.Names.Contains(Method.ToLowerInvariant()) || Layerwise.LayerwiseMethods.Handles(Method), "method",
            $"'{Method}' is not one of {string.Join(", ", Methods.Names.Concat(Layerwise.LayerwiseMethods.Names))}");
        Check(InitBatches >= 1, "init_batches", "must be at least 1");
        Check(LisaActiveLayers >= 1, "lisa_active_layers", "must be at least 1");
        Check(LisaInterval >= 1, "lisa_interval", "must be at least 1");
        Check(Density > 0 && Density <= 1, "density", "must be in (0, 1]");
        Check(SparseReselectionSteps >= 0, "sparse_reselection_steps", "must be 0 (never) or positive");
        return this;

        static void Check(bool ok, string name, string rule)
        {
            if (!ok) throw new ArgumentException($"option {name} {rule}");
        }
    }

    /// <summary>
    /// Keys set by name from a config file or the command line, so that a typed value equal to its default still counts
    /// as given (it overrides what <see cref="AdapterConfig"/> says). A field, so that it is no option itself.
    /// </summary>
    internal System.Collections.Immutable.ImmutableHashSet<string> Given = [];
}
