using PeftSharp.Data;

namespace PeftSharp.Tests.Data;

/// <summary>One token per character (id = char code + 10), bos 1, eos 2, pad 0: token counts are easy to reason about.</summary>
internal static class ToyTokenizer
{
    public static int[] Encode(string s) => s.Select(c => c + 10).ToArray();

    public static TokenizerFunctions Functions(ChatRenderer? chat = null, bool specials = true) =>
        new(Encode, specials ? 1 : null, specials ? 2 : null, 0, chat);

    /// <summary>ChatML, training on each assistant turn's content and its end marker.</summary>
    public static RenderedChat ChatMl(IReadOnlyList<ChatMessage> messages)
    {
        var sb = new System.Text.StringBuilder();
        var spans = new List<(int, int)>();
        foreach (var m in messages)
        {
            sb.Append($"<{m.Role}>");
            var start = sb.Length;
            sb.Append(m.Content).Append("</>");
            if (m.Role == "assistant") spans.Add((start, sb.Length - start));
            sb.Append('\n');
        }
        return new RenderedChat(sb.ToString(), spans);
    }
}
