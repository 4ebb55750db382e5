namespace PeftSharp.Tokenization;

/// <summary>
/// Chat templates for model folders that have none, chosen by the vocabulary's markers. Each is a model's real
/// template with <c>{% generation %}</c> around the assistant reply and its end-of-turn marker, so
/// assistant-only loss needs no guessing.
/// </summary>
internal static class FallbackTemplates
{
    /// <summary>The plain ChatML template (as in many fine-tunes), without a default system message.</summary>
    public const string ChatML =
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n'}}"
        + "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
        + "{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}{{ '\\n' }}{% endfor %}"
        + "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

    /// <summary>Meta-Llama-3-8B-Instruct's template.</summary>
    public const string Llama3 =
        "{% for message in messages %}{% if loop.index0 == 0 %}{{ bos_token }}{% endif %}"
        + "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
        + "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] | trim + '<|eot_id|>' }}{% endgeneration %}"
        + "{% else %}{{ message['content'] | trim + '<|eot_id|>' }}{% endif %}{% endfor %}"
        + "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";
}
