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
        var tokenizer = tokenizerFolder is not null && System.IO.File.Exists(Path.Combine(tokenizerFolder, "tokenizer.json"))
            ? FineTune.TokenizerFunctionsFor(HfTokenizer.Load(tokenizerFolder), "causal_lm")
            : TokenizerFunctions.None(padId, "no tokenizer.json in the models: the held-out file must hold input_ids records");
        // every record is held-out data here: nothing is split off
        data = TrainingDataset.Load(new DataOptions { TrainPath = file, EvalRatio = 0, MaxLength = maxLength }, tokenizer).Train;
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
