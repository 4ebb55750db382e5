using PeftSharp.Models;
using PeftSharp.Peft;
using static TorchSharp.torch;

namespace PeftSharp.Generation.Composition;

/// <summary>What every decoding-time ensemble checks of its members: one vocabulary.</summary>
internal static class Ensemble
{
    /// <summary>Refuses members whose configs name another vocabulary size than <paramref name="large"/>'s; others are caught by <see cref="CheckShape"/>.</summary>
    public static void CheckVocabularies(ILanguageModel large, IEnumerable<(ILanguageModel Model, string Role)> members)
    {
        if (VocabOf(large) is not { } v) return;
        foreach (var (m, role) in members)
            if (VocabOf(m) is { } w && w != v)
                throw new ArgumentException(
                    $"the large model has a vocabulary of {v} tokens but {role} has {w}: the models must share a vocabulary (and tokenizer)");
    }

    public static void CheckShape(Tensor large, Tensor member, string role)
    {
        if (!large.shape.SequenceEqual(member.shape))
            throw new InvalidOperationException(
                $"{role} gives scores [{string.Join(",", member.shape)}] but the large model [{string.Join(",", large.shape)}]: the models must share a vocabulary");
    }

    static int? VocabOf(ILanguageModel m) => m switch
    {
        PretrainedModel p => p.Config.VocabSize,
        PeftModel p => p.Base.Config.VocabSize,
        AdaptersOff a => VocabOf(a.Model),
        AdapterView a => VocabOf(a.Model),
        _ => null,
    };
}
