using System.Text.Json.Nodes;
using PeftSharp.Tokenization;

namespace PeftSharp.Tests.Tokenization;

public class ChatTemplateTests
{
    // Abridged from Qwen2.5-Instruct's tokenizer_config.json (the tools branch left out); "\n" is Jinja's escape.
    const string QwenJinja = """
        {%- if messages[0]['role'] == 'system' %}
            {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
        {%- else %}
            {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
        {%- endif %}
        {%- for message in messages %}
            {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant") %}
                {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
            {%- endif %}
        {%- endfor %}
        {%- if add_generation_prompt %}
            {{- '<|im_start|>assistant\n' }}
        {%- endif %}
        """;

    const string PlainChatMLJinja = """{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}""";

    // Meta-Llama-3-8B-Instruct's template.
    const string Llama3Jinja = """{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}""";

    // The parts of Llama-3.1-Instruct's template that matter without tools.
    const string Llama31Jinja = """
        {{- bos_token }}
        {%- if not date_string is defined %}{%- set date_string = "26 Jul 2024" %}{%- endif %}
        {{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
        {{- "Cutting Knowledge Date: December 2023\n" }}
        {{- "Today Date: " + date_string + "\n\n" }}
        {{- system_message }}
        {{- "<|eot_id|>" }}
        {%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}{%- endfor %}
        """;

    static readonly ChatMessage[] conversation = [new("user", "Hi"), new("assistant", "Hello!"), new("user", "Bye")];

    [Fact]
    public void ChatML_renders_turns_and_the_generation_prompt()
    {
        var template = ChatTemplate.Recognise(PlainChatMLJinja);

        Assert.Equal(ChatFormat.ChatML, template.Format);
        Assert.Equal(
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n",
            template.Render(conversation, addGenerationPrompt: true));
    }

    [Fact]
    public void ChatML_default_system_message_is_read_from_the_template()
    {
        var template = ChatTemplate.Recognise(QwenJinja);

        Assert.Equal("You are Qwen, created by Alibaba Cloud. You are a helpful assistant.", template.DefaultSystemMessage);
        Assert.Equal(
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n",
            template.Render([new("user", "Hi")], addGenerationPrompt: false));
        Assert.Equal(
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n",
            template.Render([new("system", "Be brief."), new("user", "Hi")], addGenerationPrompt: false));
    }

    [Fact]
    public void Llama3_renders_bos_headers_and_trimmed_content()
    {
        var template = ChatTemplate.Recognise(Llama3Jinja, bosToken: "<|begin_of_text|>");

        Assert.Equal(ChatFormat.Llama3, template.Format);
        Assert.Equal(
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            + "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            + "<|start_header_id|>assistant<|end_header_id|>\n\n",
            template.Render([new("system", " Be brief.\n"), new("user", "Hi")], addGenerationPrompt: true));
    }

    [Fact]
    public void Llama31_always_opens_with_the_dated_system_header()
    {
        var template = ChatTemplate.Recognise(Llama31Jinja, bosToken: "<|begin_of_text|>");

        Assert.Equal("26 Jul 2024", template.TodayDate);
        Assert.Equal(
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>"
            + "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
            template.Render([new("user", "Hi")], addGenerationPrompt: true));
    }

    [Theory]
    [InlineData(PlainChatMLJinja, "Hello!<|im_end|>")]
    [InlineData(Llama3Jinja, "Hello!<|eot_id|>")]
    public void Assistant_spans_cover_the_reply_and_its_end_of_turn(string jinja, string expected)
    {
        var rendered = ChatTemplate.Recognise(jinja).RenderWithSpans(conversation, addGenerationPrompt: false);

        var span = Assert.Single(rendered.AssistantSpans);
        Assert.Equal(expected, rendered.Text[span.Start..span.End]);
        Assert.Equal([0, 1, 2], rendered.Messages.Select(m => m.MessageIndex));
        Assert.Equal("Bye", rendered.Text[rendered.Messages[2].ContentStart..rendered.Messages[2].ContentEnd]);
    }

    [Fact]
    public void Encode_masks_exactly_the_assistant_tokens()
    {
        var tokenizer = TinycodeWithChatMLTokens();
        var template = tokenizer.GetChatTemplate();

        var encoding = template.Encode(tokenizer, conversation);

        var assistantIds = encoding.Ids.Where((_, i) => encoding.AssistantMask[i]).ToArray();
        Assert.Equal("Hello!<|im_end|>", tokenizer.Decode(assistantIds));
        Assert.Equal(tokenizer.Encode(template.Render(conversation, false), addSpecialTokens: false), encoding.Ids);
        Assert.Equal(4097, assistantIds[^1]); // <|im_end|> is one added token
        Assert.Equal(3, encoding.Ids.Count(id => id == 4096)); // one <|im_start|> per message, no generation prompt
    }

    [Fact]
    public void Unknown_or_missing_templates_say_what_is_supported()
    {
        var unknown = Assert.Throws<NotSupportedException>(() => ChatTemplate.Recognise("{% for m in messages %}[INST] {{ m.content }} [/INST]{% endfor %}"));
        var missing = Assert.Throws<InvalidOperationException>(() => HfTokenizer.Load(Repo.Path("models", "tinycode-3m")).GetChatTemplate());

        Assert.Contains("ChatML", unknown.Message);
        Assert.Contains("Llama 3", unknown.Message);
        Assert.Contains("[INST]", unknown.Message);
        Assert.Contains("no chat_template", missing.Message);
    }

    /// <summary>tinycode's tokenizer with &lt;|im_start|&gt; (4096) and &lt;|im_end|&gt; (4097) added, and a ChatML template.</summary>
    static HfTokenizer TinycodeWithChatMLTokens()
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
        var config = new JsonObject { ["eos_token"] = "<|im_end|>", ["chat_template"] = PlainChatMLJinja };
        return HfTokenizer.FromJson(json.ToJsonString(), config.ToJsonString());
    }
}
