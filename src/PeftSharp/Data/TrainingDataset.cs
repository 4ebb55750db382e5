namespace PeftSharp.Data;

/// <summary>Where the data is and how to turn it into rows; the data half of <c>TrainingOptions</c>.</summary>
public sealed record DataOptions
{
    /// <summary>A file (.jsonl, .json, .csv, .parquet, text) or a folder of text files.</summary>
    public required string TrainPath { get; init; }
    /// <summary>A separate held-out file; when null, <see cref="EvalRatio"/> of the training records are held out.</summary>
    public string? EvalPath { get; init; }
    public double EvalRatio { get; init; } = 0.1;
    public long Seed { get; init; } = 42;
    public int MaxLength { get; init; } = 512;
    public bool Packing { get; init; }
    public bool CompletionOnlyLoss { get; init; } = true;
    public bool AssistantOnlyLoss { get; init; } = true;
    public bool SkipBadRecords { get; init; }
    public string TextField { get; init; } = "text";
    /// <summary>The label column for sequence classification; null for causal language modelling.</summary>
    public string? LabelField { get; init; }
    /// <summary>Class names in index order, for string labels; when null they are the sorted distinct names.</summary>
    public IReadOnlyList<string>? LabelNames { get; init; }
    /// <summary>The model's vocabulary size: token ids of <c>input_ids</c> records must be below it (checked when set).</summary>
    public int? VocabSize { get; init; }
}

/// <summary>What loading found, for the run summary.</summary>
public sealed record DataReport(int Records, int TrainRows, int EvalRows, long TrainTokens, int Truncated, int Empty,
    int BadRecords, IReadOnlyList<string> BadExamples, IReadOnlyList<string>? LabelNames);

/// <summary>The training and held-out rows, ready for the trainer.</summary>
public sealed record TrainingDataset(BatchSource Train, BatchSource? Eval, DataReport Report)
{
    /// <summary>Reads, parses, splits, tokenises, truncates and (optionally) packs the data.</summary>
    /// <exception cref="DataFormatException">a bad record, unless <see cref="DataOptions.SkipBadRecords"/>.</exception>
    public static TrainingDataset Load(DataOptions o, TokenizerFunctions tok)
    {
        var bad = new List<string>();
        var train = ReadExamples(o.TrainPath, o, tok, bad);
        List<Example> eval;
        if (o.EvalPath is not null) eval = ReadExamples(o.EvalPath, o, tok, bad);
        else (train, eval) = SplitByRatio(train, o.EvalRatio, o.Seed);
        if (train.Count == 0) throw new InvalidDataException($"{o.TrainPath}: no usable training records");
        CheckTaskIds(train.Concat(eval).ToList());

        var labelNames = o.LabelField is null ? null : LabelNamesOf(train.Concat(eval), o.LabelNames);
        int truncated = 0, empty = 0;
        var trainRows = ToRows(train);
        var evalRows = ToRows(eval);
        if (o.Packing)
        {
            trainRows = Packing.Pack(trainRows, o.MaxLength).ToList();
            evalRows = Packing.Pack(evalRows, o.MaxLength).ToList();
        }
        var report = new DataReport(train.Count + eval.Count, trainRows.Count, evalRows.Count, trainRows.Sum(r => (long)r.InputIds.Length),
            truncated, empty, bad.Count, bad.Take(5).ToList(), labelNames);
        return new TrainingDataset(new BatchSource(trainRows, tok.PadId), evalRows.Count > 0 ? new BatchSource(evalRows, tok.PadId) : null, report);

        List<Row> ToRows(List<Example> examples)
        {
            var rows = new List<Row>(examples.Count);
            foreach (var e in examples)
            {
                long? label = e.LabelName is { } name ? labelNames!.ToList().IndexOf(name) : e.LabelId;
                if (label is < 0) throw new DataFormatException(e.Source, $"label '{e.LabelName}' is not one of the label names [{string.Join(", ", labelNames!)}]");
                var row = ExampleTokenizer.Tokenize(e, tok, o.MaxLength, o.CompletionOnlyLoss, o.AssistantOnlyLoss, label);
                if (e.Kind != ExampleKind.InputIds && RowLength(e, tok) > o.MaxLength) truncated++;
                // A causal-LM row with no target (a prompt longer than max-length, say) would make the mean loss 0/0.
                if (label is null && !ExampleTokenizer.HasTrainableTokens(row)) { empty++; continue; }
                rows.Add(row);
            }
            return rows;
        }
    }

    // A routed-by-task method needs every row's task, so a file either names them all or none.
    static void CheckTaskIds(List<Example> examples)
    {
        if (examples.FirstOrDefault(e => e.TaskId is not null) is not { } named) return;
        if (examples.FirstOrDefault(e => e.TaskId is null) is { } unnamed)
            throw new DataFormatException(unnamed.Source, $"has no 'task_id' but {named.Source} has one; give every record a task_id or none");
    }

    // Cheap enough for first-run sizes, and only used to count truncations for the report.
    static int RowLength(Example e, TokenizerFunctions tok) => e.Kind switch
    {
        ExampleKind.Text => tok.Encode(e.Text!).Length + (tok.BosId is null ? 0 : 1) + (tok.EosId is null ? 0 : 1),
        ExampleKind.PromptCompletion => tok.Encode(e.Prompt!).Length + tok.Encode(e.Completion!).Length + (tok.BosId is null ? 0 : 1) + (tok.EosId is null ? 0 : 1),
        _ => 0,
    };

    static List<Example> ReadExamples(string path, DataOptions o, TokenizerFunctions tok, List<string> bad)
    {
        var examples = new List<Example>();
        foreach (var record in DataReader.Read(path))
        {
            try { examples.Add(Usable(ExampleParser.Parse(record, o.TextField, o.LabelField), o, tok)); }
            catch (DataFormatException e) when (o.SkipBadRecords) { bad.Add(e.Message); }
            catch (DataFormatException e)
            {
                throw new DataFormatException(e.Where, e.Problem + " (--skip-bad-records skips such records)");
            }
        }
        return examples;
    }

    /// <summary>
    /// Checks what the model and tokenizer will need of a record, so that a bad one is named (and skippable) here
    /// rather than failing inside libtorch mid-run: token ids inside the vocabulary, a tokenizer for anything not
    /// already tokenised.
    /// </summary>
    static Example Usable(Example e, DataOptions o, TokenizerFunctions tok)
    {
        if (e.Kind != ExampleKind.InputIds)
        {
            if (tok.Unavailable is { } why)
            {
                var kind = e.Kind switch { ExampleKind.Text => "text", ExampleKind.PromptCompletion => "prompt/completion", _ => "chat ('messages')" };
                throw new DataFormatException(e.Source, $"is a {kind} record, which needs a tokenizer, but {why}; give token ids ('input_ids') or use a model folder with a tokenizer");
            }
            return e;
        }
        if (o.VocabSize is not { } vocab) return e;
        for (var i = 0; i < e.InputIds!.Length; i++)
            if ((uint)e.InputIds[i] >= (uint)vocab)
                throw new DataFormatException(e.Source, $"input_ids[{i}] = {e.InputIds[i]} is outside the model's vocabulary (0..{vocab - 1})");
        for (var i = 0; e.Labels is not null && i < e.Labels.Length; i++)
            if (e.Labels[i] != ExampleTokenizer.Ignore && (uint)e.Labels[i] >= (uint)vocab)
                throw new DataFormatException(e.Source, $"labels[{i}] = {e.Labels[i]} is neither {ExampleTokenizer.Ignore} (ignored) nor inside the model's vocabulary (0..{vocab - 1})");
        return e;
    }

    /// <summary>
    /// Holds out <paramref name="ratio"/> of the items, chosen by a seeded shuffle; both parts keep file order.
    /// A positive ratio holds out at least one item and leaves at least one for training.
    /// </summary>
    public static (List<T> Train, List<T> Eval) SplitByRatio<T>(IReadOnlyList<T> items, double ratio, long seed)
    {
        if (ratio is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(ratio), ratio, "eval ratio must be in [0, 1)");
        var n = items.Count;
        var take = ratio == 0 || n < 2 ? 0 : Math.Clamp((int)Math.Round(n * ratio), 1, n - 1);
        var order = Enumerable.Range(0, n).ToArray();
        SeededRandom.Shuffle(order, SeededRandom.Mix(seed, -1));
        var held = order.Take(take).ToHashSet();
        var train = new List<T>(n - take);
        var eval = new List<T>(take);
        for (var i = 0; i < n; i++) (held.Contains(i) ? eval : train).Add(items[i]);
        return (train, eval);
    }

    static IReadOnlyList<string>? LabelNamesOf(IEnumerable<Example> examples, IReadOnlyList<string>? given)
    {
        var names = examples.Where(e => e.LabelName is not null).Select(e => e.LabelName!).Distinct().Order(StringComparer.Ordinal).ToList();
        if (given is not null) return given;
        return names.Count > 0 ? names : null;
    }
}
