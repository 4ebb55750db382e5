using PeftSharp.Data;
using PeftSharp.Models;
using PeftSharp.Tokenization;
using PeftSharp.Training;

namespace PeftSharp.Merging;

/// <summary>
/// The mean next-token loss of a model folder on a held-out file (any format training reads: text, prompt/completion,
/// chats, <c>input_ids</c>), tokenised once with the tokenizer of the given folder.
/// </summary>
public sealed class HeldOutLoss
{
    readonly BatchSource data;
    readonly int batchSize;

    public string File { get; }
    public int Rows => data.Count;
    public long Tokens => data.Rows.Sum(r => (long)r.Labels.Count(l => l != ExampleTokenizer.Ignore));

    /// <param name="tokenizerFolder">a folder with tokenizer.json, or null for <c>input_ids</c> records only.</param>
    public HeldOutLoss(string file, string? tokenizerFolder, int padId, int maxLength = 512, int batchSize = 8)
    {
        File = file;
        this.batchSize = batchSize;
        data = Read(file, tokenizerFolder, padId, maxLength);
    }

    /// <summary>Every record of <paramref name="file"/>, tokenised as <see cref="HeldOutLoss"/> does (also aTLAS's training data).</summary>
    /// <param name="vocabSize">when given, token ids at or past it are refused with the record's line.</param>
    public static BatchSource Read(string file, string? tokenizerFolder, int padId, int maxLength = 512, int? vocabSize = null)
    {
        var tokenizer = tokenizerFolder is not null && System.IO.File.Exists(Path.Combine(tokenizerFolder, "tokenizer.json"))
            ? FineTune.TokenizerFunctionsFor(HfTokenizer.Load(tokenizerFolder), "causal_lm")
            : TokenizerFunctions.None(padId, $"no tokenizer.json in the models: {Path.GetFileName(file)} must hold input_ids records");
        // nothing is split off
        return TrainingDataset.Load(new DataOptions { TrainPath = file, EvalRatio = 0, MaxLength = maxLength, VocabSize = vocabSize }, tokenizer).Train;
    }

    /// <summary>The mean loss over every labelled held-out token of the model in <paramref name="modelFolder"/>.</summary>
    public double Of(string modelFolder)
    {
        using var model = AutoModel.Load(modelFolder);
        return Of(model);
    }

    public double Of(ILanguageModel model)
    {
        var scored = new TrainableModel([], b => Objectives.CausalLM(model, b), _ => { });
        return Trainer.Evaluation(scored, data, batchSize, 0).Loss;
    }
}
