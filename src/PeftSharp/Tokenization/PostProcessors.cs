namespace PeftSharp.Tokenization;

/// <summary>Adds the special tokens of a single sequence (HF's <c>post_processor</c> with add_special_tokens).</summary>
internal interface IPostProcessor
{
    void AddSpecialTokens(List<int> ids, List<TokenSpan> offsets);
}

/// <summary>
/// HF's <c>TemplateProcessing</c> for one sequence, e.g. <c>[CLS] $A [SEP]</c> or <c>&lt;|begin_of_text|&gt; $A</c>;
/// BertProcessing and RobertaProcessing are the template <c>cls $A sep</c>. An item is either the ids of a
/// special token, or null for the sequence itself.
/// </summary>
internal sealed class TemplateProcessor(IReadOnlyList<int[]?> single) : IPostProcessor
{
    public IReadOnlyList<int[]?> Single => single;

    public void AddSpecialTokens(List<int> ids, List<TokenSpan> offsets)
    {
        var sequence = ids.ToArray();
        var sequenceOffsets = offsets.ToArray();
        ids.Clear();
        offsets.Clear();
        foreach (var item in single)
        {
            if (item == null)
            {
                ids.AddRange(sequence);
                offsets.AddRange(sequenceOffsets);
            }
            else
            {
                ids.AddRange(item);
                offsets.AddRange(item.Select(_ => new TokenSpan(0, 0))); // HF gives added specials offsets (0, 0)
            }
        }
    }
}

/// <summary>Post-processors that add no tokens (ByteLevel only trims offsets in HF).</summary>
internal sealed class NoSpecialTokens : IPostProcessor
{
    public void AddSpecialTokens(List<int> ids, List<TokenSpan> offsets) { }
}

internal sealed class SequenceProcessor(IReadOnlyList<IPostProcessor> steps) : IPostProcessor
{
    public void AddSpecialTokens(List<int> ids, List<TokenSpan> offsets)
    {
        foreach (var step in steps) step.AddSpecialTokens(ids, offsets);
    }
}
