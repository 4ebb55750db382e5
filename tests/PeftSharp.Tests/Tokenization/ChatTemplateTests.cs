using System.Text.Json.Nodes;
using PeftSharp.Data;
using PeftSharp.Tokenization;
using PeftSharp.Tokenization.Jinja;
using ChatMessage = PeftSharp.Tokenization.ChatMessage;

namespace PeftSharp.Tests.Tokenization;

public class ChatTemplateTests
{
    const string PlainChatMLJinja = """{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}""";

    // Meta-Llama-3-8B-Instruct's template.
    const string Llama3Jinja = """{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}""";

    static readonly ChatMessage[] conversation = [new("user", "Hi"), new("assistant", "Hello!"), new("user", "Bye")];

    static readonly Dictionary<string, string?> llamaTokens = new() { ["bos_token"] = "<|begin_of_text|>", ["eos_token"] = "<|eot_id|>" };

    [Fact]
    public void ChatML_renders_turns_and_the_generation_prompt()
    {
        var template = ChatTemplate.Parse(PlainChatMLJinja);

        Assert.Equal(
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n",
            template.Render(conversation, addGenerationPrompt: true));
    }

    [Fact]
    public void Llama3_renders_bos_headers_and_trimmed_content()
    {
        var template = ChatTemplate.Parse(Llama3Jinja, llamaTokens);

        Assert.Equal(
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            + "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            + "<|start_header_id|>assistant<|end_header_id|>\n\n",
            template.Render([new("system", " Be brief.\n"), new("user", "Hi")], addGenerationPrompt: true));
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Fallback_templates_render_like_the_real_ones(bool generationPrompt)
    {
        ChatMessage[] chat = [new("system", " Be brief.\n"), .. conversation];

        Assert.Equal(ChatTemplate.Parse(PlainChatMLJinja).Render(chat, generationPrompt),
            ChatTemplate.Parse(FallbackTemplates.ChatML).Render(chat, generationPrompt));
        Assert.Equal(ChatTemplate.Parse(Llama3Jinja, llamaTokens).Render(chat, generationPrompt),
            ChatTemplate.Parse(FallbackTemplates.Llama3, llamaTokens).Render(chat, generationPrompt));
    }

    [Theory]
    [InlineData(PlainChatMLJinja, " Hello!\n<|im_end|>", false)]
    [InlineData(FallbackTemplates.ChatML, " Hello!\n<|im_end|>", true)]
    [InlineData(Llama3Jinja, "Hello!<|eot_id|>", false)]
    [InlineData(FallbackTemplates.Llama3, "Hello!<|eot_id|>", true)]
    public void Assistant_spans_cover_the_reply_and_its_end_of_turn(string jinja, string expected, bool markers)
    {
        var rendered = ChatTemplate.Parse(jinja, llamaTokens).RenderWithSpans(
            [new("user", "Hello!"), new("assistant", " Hello!\n"), new("user", "Bye")], addGenerationPrompt: false);

        Assert.Equal(markers, rendered.FromGenerationMarkers);
        var span = Assert.Single(rendered.AssistantSpans);
        Assert.Equal(expected, rendered.Text[span.Start..span.End]);
    }

    [Fact]
    public void Located_spans_skip_a_reasoning_block_the_template_drops_from_history()
    {
        // Qwen3 keeps <think> only after the last user turn: earlier replies are matched by their answer.
        var fixture = JsonNode.Parse(File.ReadAllText(Repo.Path("tests", "fixtures", "chat-templates", "qwen3.json")))!;
        var template = ChatTemplate.Parse((string)fixture["template"]!);

        var rendered = template.RenderWithSpans(
            [new("user", "Is 9 prime?"), new("assistant", "<think>\n9 = 3 * 3.\n</think>\n\nNo."), new("user", "Is 11?"), new("assistant", "Yes.")], false);

        Assert.Equal(["No.<|im_end|>", "Yes.<|im_end|>"], rendered.AssistantSpans.Select(s => rendered.Text[s.Start..s.End]));
    }

    [Fact]
    public void A_reply_the_template_rewrites_beyond_recognition_is_an_error()
    {
        var template = ChatTemplate.Parse("{% for m in messages %}{{ m.content | upper }}{% endfor %}");

        var e = Assert.Throws<InvalidOperationException>(() => template.RenderWithSpans([new("user", "a"), new("assistant", "hello")], false));

        Assert.Contains("assistant message 1", e.Message);
        Assert.Contains("{% generation %}", e.Message);
    }

    [Fact]
    public void Encode_masks_exactly_the_assistant_tokens()
    {
        var tokenizer = TinycodeWithChatMLTokens(PlainChatMLJinja);
        var template = tokenizer.GetChatTemplate();

        var encoding = template.Encode(tokenizer, conversation);

        var assistantIds = encoding.Ids.Where((_, i) => encoding.AssistantMask[i]).ToArray();
        Assert.Equal("Hello!<|im_end|>", tokenizer.Decode(assistantIds));
        Assert.Equal(tokenizer.Encode(template.Render(conversation, false), addSpecialTokens: false), encoding.Ids);
        Assert.Equal(4097, assistantIds[^1]); // <|im_end|> is one added token
        Assert.Equal(3, encoding.Ids.Count(id => id == 4096)); // one <|im_start|> per message, no generation prompt
    }

    [Fact]
    public void The_models_own_template_wins_and_the_fallback_applies_only_without_one()
    {
        var own = TinycodeWithChatMLTokens("{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}");
        var none = TinycodeWithChatMLTokens(null);

        Assert.Equal("[user] Hi\n", own.GetChatTemplate().Render([new("user", "Hi")], false));
        Assert.Equal("chat_template", own.GetChatTemplate().Name);
        Assert.Equal("<|im_start|>user\nHi<|im_end|>\n", none.GetChatTemplate().Render([new("user", "Hi")], false));
        Assert.Equal("ChatML", none.GetChatTemplate().Name);
    }

    [Fact]
    public void Missing_or_unsupported_templates_are_clear_errors()
    {
        var missing = Assert.Throws<InvalidOperationException>(() => HfTokenizer.Load(Repo.Path("models", "tinycode-3m")).GetChatTemplate());
        var unsupported = Assert.Throws<TemplateException>(() => TinycodeWithChatMLTokens("{{ bos_token }}\n{% include 'x.jinja' %}").GetChatTemplate());

        Assert.Contains("no chat_template", missing.Message);
        Assert.Equal("chat_template: line 2: the statement '{% include %}' is not supported by PeftSharp's Jinja interpreter", unsupported.Message);
    }

    [Theory]
    [InlineData("qwen2.5")] // no generation markers: replies are located in the text
    [InlineData(null)] // no template: the ChatML fallback, whose generation markers give the spans
    public void Chat_records_train_on_the_assistant_reply_and_its_end_of_turn(string? model)
    {
        var template = model is null ? null : (string)JsonNode.Parse(File.ReadAllText(Repo.Path("tests", "fixtures", "chat-templates", model + ".json")))!["template"]!;
        var tokenizer = TinycodeWithChatMLTokens(template);
        var example = new Example(ExampleKind.Messages, new SourceRef("chat.jsonl", 1))
        {
            Messages = [new("user", "Hi"), new("assistant", "Hello!"), new("user", "Bye"), new("assistant", "Ciao")],
        };

        var row = ExampleTokenizer.Tokenize(example, PeftSharp.Training.FineTune.TokenizerFunctionsFor(tokenizer, "causal_lm"), 512);

        var trained = row.Labels.Where(l => l != ExampleTokenizer.Ignore).ToArray();
        Assert.Equal("Hello!<|im_end|>Ciao<|im_end|>", tokenizer.Decode(trained));
        var text = tokenizer.Decode(row.InputIds);
        Assert.StartsWith(model is null ? "<|im_start|>user\nHi" : "<|im_start|>system\nYou are Qwen", text);
    }

    [Fact]
    public void A_chat_record_with_a_template_the_interpreter_cannot_run_names_the_record()
    {
        var tokenizer = TinycodeWithChatMLTokens("{% for m in messages %}{{ m.content | wordwrap(10) }}{% endfor %}");
        var example = new Example(ExampleKind.Messages, new SourceRef("chat.jsonl", 7)) { Messages = [new("user", "Hi")] };

        var e = Assert.Throws<DataFormatException>(() => ExampleTokenizer.Tokenize(example, PeftSharp.Training.FineTune.TokenizerFunctionsFor(tokenizer, "causal_lm"), 512));

        Assert.Equal("chat.jsonl:7: cannot render this chat: chat_template: line 1: the filter 'wordwrap' is not supported by PeftSharp's Jinja interpreter", e.Message);
    }

    /// <summary>tinycode's tokenizer with &lt;|im_start|&gt; (4096) and &lt;|im_end|&gt; (4097) added, and the given template.</summary>
    static HfTokenizer TinycodeWithChatMLTokens(string? template)
    {
        var folder = Repo.Path("models", "tinycode-3m");
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "tokenizer.json")))!;
        foreach (var (id, content) in new[] { (4096, "<|im_start|>"), (4097, "<|im_end|>") })
        {
            json["added_tokens"]!.AsArray().Add(new JsonObject
            {
                ["id"] = id, ["content"] = content, ["single_word"] = false, ["lstrip"] = false,
                ["rstrip"] = false, ["normalized"] = false, ["special"] = true,
            });
        }
        var config = new JsonObject { ["eos_token"] = "<|im_end|>" };
        if (template != null) config["chat_template"] = template;
        return HfTokenizer.FromJson(json.ToJsonString(), config.ToJsonString());
    }
}
